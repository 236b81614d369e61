"""Writing files so that a reader or a crash never meets half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, content: dict[str, Any], sort_keys: bool = True) -> None:
    """Write ``content`` as JSON to ``path`` so that readers see the old or the new file, never half of one.

    See :func:`write_bytes_atomically`.

    :param sort_keys: write the keys sorted (``False`` keeps their order).
    :raises OSError: the disk refused the write.
    :raises TypeError: ``content`` is not JSON-serialisable (nothing is written).
    """
    write_bytes_atomically(Path(path), (json.dumps(content, indent=2, sort_keys=sort_keys) + "\n").encode())


def write_bytes_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` so that readers see the old or the new file, never half of one.

    The bytes are written to a temporary file beside ``path``, synced to disk and renamed over
    ``path``. When anything fails (a full disk, say) the temporary file is removed and
    ``path`` is left as it was.

    :raises OSError: the disk refused the write; its ``filename`` is ``path``.
    """
    path = Path(path)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~current_umask())
        os.replace(handle.name, path)
    except BaseException as error:
        Path(handle.name).unlink(missing_ok=True)
        if isinstance(error, OSError) and not error.filename:  # name the file, not just "No space left on device"
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def current_umask() -> int:
    """Return the process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new, renamed or removed names) to disk."""
    dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
