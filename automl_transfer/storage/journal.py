"""The run dir's Optuna journal (``study.journal``), checked and repaired before anything is appended.

How Optuna 5 writes and reads the file (``JournalFileBackend``): a writer takes the lock
``study.journal.lock`` (``JournalFileOpenLock``), appends ``json.dumps(record) + "\\n"`` in one
write and fsyncs. So while the lock is held no write is under way, and every record ends in a
newline. A crash during that write leaves a *torn tail*: bytes after the last newline that are
not a whole record. Readers take no lock; they skip an unterminated last line (it could be a
write in progress) but raise on a bad line that another line follows. The next writer
appends after the torn bytes, gluing its record onto them: the glued line does not decode, the
record is lost, and once one more record follows it every read of the study fails.

What this module does about it:

- :func:`prepare_journal`, called whenever a search, worker or ``repair`` opens the journal
  for writing, scans every line. A torn tail is copied into ``study.journal.torn-<UTC time>``
  (synced) and cut off, under the writers' lock; a last record that lacks only its newline
  gets it. Nothing a reader ever applied changes.
- A bad line *before* the end is never dropped silently: :class:`JournalCorruptError` names
  its line number and byte offset and the fix (restore a backup, or ``automl-transfer repair``).
- :func:`quarantine_bad_lines` (what ``automl-transfer repair`` runs) moves bad lines into
  ``study.journal.bad-<UTC time>``; when a bad line is a torn prefix with a whole record glued
  after it, only the torn prefix goes and the record is kept.
- :class:`TailRepairingJournalBackend` repairs a torn tail under the lock right before each
  append, so a worker that survives a crashed one never glues onto its tear.
- :class:`ReadOnlyJournalBackend` reads a journal without writing anything (``report`` on a
  run dir it cannot write).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileOpenLock

from automl_transfer.errors import StorageError
from automl_transfer.storage.atomic import fsync_dir
from automl_transfer.storage.optuna_internals import journal_op_codes

#: Every record Optuna writes starts with these bytes (``op_code`` first, no spaces); inside a
#: JSON string the quotes would be escaped, so they only ever mark the start of a record.
RECORD_START = b'{"op_code":'


@dataclass(frozen=True)
class BadLine:
    """A newline-terminated line of the journal that Optuna cannot replay.

    :param number: its 1-based line number.
    :param offset: the byte offset where it starts.
    :param length: its length in bytes, newline included.
    :param error: why it is not a record.
    :param glued_at: the byte offset of a whole record glued after a torn prefix in this line, or ``None``.
    """

    number: int
    offset: int
    length: int
    error: str
    glued_at: int | None = None

    def describe(self) -> str:
        """Return ``line N (byte offset O): the problem``."""
        glued = f", a torn record with a whole one glued after it at byte {self.glued_at}" if self.glued_at else ""
        return f"line {self.number} (byte offset {self.offset}): {self.error}{glued}"


@dataclass(frozen=True)
class JournalScan:
    """What a journal holds, line by line.

    :param path: the journal file.
    :param size: its size in bytes when read.
    :param records: the number of whole records (a last one lacking only its newline included).
    :param bad_lines: newline-terminated lines that are not records, in file order.
    :param tail_offset: where the bytes after the last newline start (``size`` when there are none).
    :param tail_is_record: those bytes are a whole record that lacks only its newline.
    """

    path: Path
    size: int
    records: int
    bad_lines: tuple[BadLine, ...]
    tail_offset: int
    tail_is_record: bool

    @property
    def torn_bytes(self) -> int:
        """How many bytes at the end are a torn record (0 when none)."""
        return 0 if self.tail_is_record else self.size - self.tail_offset


class JournalCorruptError(StorageError):
    """A journal line before the end is not a record: Optuna cannot read past it."""

    def __init__(self, scan: JournalScan):
        self.scan = scan
        first = scan.bad_lines[0]
        more = f" (and {len(scan.bad_lines) - 1} more bad line(s))" if len(scan.bad_lines) > 1 else ""
        super().__init__(
            f"{scan.path} is damaged at {first.describe()}{more}; Optuna cannot read the study past it and nothing "
            f"was changed. Restore the file from a backup, or stop every process of this search and run "
            f"`automl-transfer repair {scan.path.parent}`, which moves the bad bytes into {scan.path.name}.bad-<time> "
            "beside it (trials recorded only on that line are lost)"
        )


def record_error(line: bytes) -> str | None:
    """Tell whether ``line`` is a record Optuna's replay can apply.

    :param line: one line of the journal, with or without its newline.
    :returns: ``None`` for a record, else why it is not one.
    """
    try:
        record = json.loads(line)  # what Optuna's reader does (bytes in, NaN allowed)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        return f"{type(error).__name__}: {error}"
    if not isinstance(record, dict):
        return f"JSON {type(record).__name__}, not a journal record"
    op_code = record.get("op_code")
    if type(op_code) is not int or op_code not in journal_op_codes():
        return f"no known op_code (op_code={op_code!r})"
    return None


def _glued_record(line: bytes) -> int | None:
    """The offset in ``line`` of a whole record glued after a torn prefix, or ``None``."""
    start = line.find(RECORD_START, 1)
    while start != -1:
        if record_error(line[start:]) is None:
            return start
        start = line.find(RECORD_START, start + 1)
    return None


def scan_journal(path: Path) -> JournalScan:
    """Read ``path`` and classify every line; nothing is changed and no lock is taken.

    :raises OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    records, bad, start, number = 0, [], 0, 0
    while (end := data.find(b"\n", start)) != -1:
        number += 1
        line = data[start : end + 1]
        error = record_error(line)
        if error is None:
            records += 1
        else:
            glued = _glued_record(line)
            bad.append(BadLine(number, start, len(line), error, None if glued is None else start + glued))
        start = end + 1
    tail_is_record = start < len(data) and record_error(data[start:]) is None
    return JournalScan(Path(path), len(data), records + tail_is_record, tuple(bad), start, tail_is_record)


def prepare_journal(path: Path) -> list[str]:
    """Make a journal safe to append to: repair a torn tail, refuse a bad line before the end.

    :param path: the journal (a missing one is left missing: Optuna creates it).
    :returns: what was done, in words (empty for a healthy journal).
    :raises JournalCorruptError: a bad line before the end; nothing is changed then.
    :raises OSError: the journal, its lock or the sidecar cannot be read or written.
    """
    path = Path(path)
    if not path.is_file():
        return []
    scan = scan_journal(path)
    if scan.bad_lines:
        raise JournalCorruptError(scan)
    if scan.tail_offset == scan.size:
        return []
    with _writers_lock(path):
        done = _repair_tail_locked(path)
    return [done] if done else []


def _repair_tail_locked(path: Path) -> str | None:
    """Repair the bytes after the last newline; the caller holds the writers' lock.

    :returns: what was done, or ``None`` when the file ends in a newline.
    """
    size = path.stat().st_size
    offset, tail = _tail(path, size)
    if not tail:
        return None
    if record_error(tail) is None:
        with open(path, "ab") as journal:
            journal.write(b"\n")
            journal.flush()
            os.fsync(journal.fileno())
        return f"added the missing newline after the last record of {path}"
    sidecar = write_sidecar(path, "torn", tail)
    with open(path, "r+b") as journal:
        journal.truncate(offset)
        journal.flush()
        os.fsync(journal.fileno())
    return (f"moved a torn last record ({len(tail)} bytes, left by a crash or a full disk while writing) from {path} "
            f"into {sidecar}")


def _tail(path: Path, size: int) -> tuple[int, bytes]:
    """Return where the bytes after the last newline start, and those bytes (read backwards in blocks)."""
    block = 1 << 16
    pieces: list[bytes] = []
    with open(path, "rb") as journal:
        end = size
        while end > 0:
            start = max(0, end - block)
            journal.seek(start)
            chunk = journal.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline != -1:
                pieces.append(chunk[newline + 1 :])
                return start + newline + 1, b"".join(reversed(pieces))
            pieces.append(chunk)
            end = start
    return 0, b"".join(reversed(pieces))


def quarantine_bad_lines(path: Path) -> list[str]:
    """Rewrite a journal without its bad lines and torn tail, keeping their bytes beside it.

    Stop every process of the search first: the file is replaced (atomically, under the
    writers' lock), so a running worker would keep appending to the old one.

    :returns: what was done, in words (empty for a healthy journal).
    :raises OSError: a file cannot be written; the journal is then unchanged.
    """
    path = Path(path)
    with _writers_lock(path):
        scan = scan_journal(path)
        if not scan.bad_lines:
            done = _repair_tail_locked(path)
            return [done] if done else []
        data = path.read_bytes()
        kept, removed, start = [], [], 0
        for bad in scan.bad_lines:
            kept.append(data[start : bad.offset])
            cut = bad.glued_at if bad.glued_at is not None else bad.offset + bad.length
            removed.append(data[bad.offset : cut])
            kept.append(data[cut : bad.offset + bad.length])
            start = bad.offset + bad.length
        kept.append(data[start : scan.tail_offset] + (data[scan.tail_offset :] + b"\n" if scan.tail_is_record else b""))
        if scan.torn_bytes:
            removed.append(data[scan.tail_offset :])
        sidecar = write_sidecar(path, "bad", b"\n".join(removed))
        _replace(path, b"".join(kept))
    lines = ", ".join(str(bad.number) for bad in scan.bad_lines)
    return [f"moved bad line(s) {lines}{' and a torn last record' if scan.torn_bytes else ''} of {path} into {sidecar}"]


def _replace(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` atomically, keeping its permissions."""
    temporary = path.with_name(f".{path.name}.repair-{os.getpid()}")
    try:
        with open(temporary, "wb") as new:
            new.write(content)
            new.flush()
            os.fsync(new.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_sidecar(path: Path, kind: str, content: bytes) -> Path:
    """Write ``content`` durably into a new file ``<path>.<kind>-<UTC time>`` beside ``path``.

    :returns: the new file (never an existing one).
    :raises OSError: it cannot be written.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        sidecar = path.with_name(f"{path.name}.{kind}-{stamp}{f'-{attempt}' if attempt else ''}")
        try:
            descriptor = os.open(sidecar, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"cannot find a free name for {path.name}.{kind}-{stamp}")
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    fsync_dir(path.parent)
    return sidecar


@contextmanager
def _writers_lock(path: Path) -> Iterator[None]:
    """Hold the lock Optuna's journal writers take (``<journal>.lock``; Optuna breaks it after 30 s if stale)."""
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class TailRepairingJournalBackend(JournalFileBackend):
    """Optuna's journal file backend, repairing a torn tail under the writers' lock before each append.

    :param path: the journal file.
    """

    def __init__(self, path: Path):
        self.journal_path = Path(path)
        self.writers_lock = JournalFileOpenLock(str(path))
        super().__init__(str(path), lock_obj=self.writers_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` as Optuna does (one write, fsynced), after repairing a torn tail.

        :raises OSError: the repair or the write failed (a full disk ...).
        """
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self.writers_lock.acquire()
        try:
            _repair_tail_locked(self.journal_path)
            with open(self.journal_path, "ab") as journal:
                journal.write(text.encode("utf-8"))
                journal.flush()
                os.fsync(journal.fileno())
        except OSError as error:  # a part written before a full disk stopped it is cut off by the next append
            raise OSError(error.errno, error.strerror, error.filename or str(self.journal_path)) from error
        finally:
            self.writers_lock.release()


class ReadOnlyJournalBackend(BaseJournalBackend):
    """Reads a journal without writing anything, not even a lock file.

    An unterminated last line is skipped, as Optuna's reader does; a bad line before the end
    raises :class:`JournalCorruptError`.

    :param path: the journal file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        """Yield the records from number ``log_number_from`` on.

        :raises JournalCorruptError: a line before the end is not a record.
        """
        with open(self.path, "rb") as journal:
            lines = [line for line in journal if line.endswith(b"\n")]
        for line in lines[log_number_from:]:
            if record_error(line) is not None:
                raise JournalCorruptError(scan_journal(self.path))
            yield json.loads(line)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Refuse: this backend only reads.

        :raises StorageError: always.
        """
        raise StorageError(f"{self.path} was opened read-only; nothing can be recorded in it")
