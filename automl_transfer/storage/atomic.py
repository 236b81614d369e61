"""Writing files so that a reader or a crash never meets half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as JSON to ``path`` so that readers see the old or the new file, never half of one.

    The text is written to a temporary file beside ``path``, synced to disk and renamed over
    ``path``. When anything fails (a full disk, say) the temporary file is removed and
    ``path`` is left as it was.

    :raises OSError: the disk refused the write.
    :raises TypeError: ``content`` is not JSON-serialisable (nothing is written).
    """
    path = Path(path)
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(text)
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
