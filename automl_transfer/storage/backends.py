"""Opening a search's Optuna storage, and finding the study in it.

Without a URL a search keeps its study in the run dir's journal file (Optuna's
JournalStorage, file backend: safe for many processes on one machine), checked and repaired
after a crash by :mod:`automl_transfer.storage.journal` before anything is appended. With a URL
(``postgresql://...``) it uses Optuna's RDBStorage with a heartbeat, so that a lost machine is
noticed. Optuna is imported when a storage is opened, not when this module is.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from automl_transfer.errors import RunDirError, StorageError
from automl_transfer.storage.run_dir import JOURNAL_NAME

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from automl_transfer.storage.journal import ReadOnlyJournalBackend, TailRepairingJournalBackend

#: Seconds between the heartbeats a trial records in an RDB storage.
HEARTBEAT_INTERVAL = 30
#: A trial whose heartbeat is older than this many intervals is taken for lost.
GRACE_INTERVALS = 3
#: Seconds to wait for a PostgreSQL or MySQL server to answer before giving up.
CONNECT_TIMEOUT = 10

logger = logging.getLogger(__name__)


def open_storage(
    run_dir: Path | None,
    storage_url: str | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    read_only: bool = False,
) -> BaseStorage:
    """Open the Optuna storage of a search.

    :param run_dir: the run directory; without ``storage_url`` the journal file in it is used
        (the directory must exist). A torn last record left by a crash is moved aside first
        (one warning line says where), so nothing is ever appended onto it.
    :param storage_url: an RDB URL (``postgresql://...``, ``sqlite:///...``) for searches that
        span machines.
    :param heartbeat_interval: seconds between the heartbeats each running trial records in an
        RDB storage; a trial silent for :data:`GRACE_INTERVALS` intervals is taken for lost.
    :param read_only: read the journal without writing anything to the run dir (no repair,
        no lock file); a torn last record is then only reported.
    :returns: the storage.
    :raises StorageError: the URL cannot be reached or opened, or names an in-memory SQLite
        database (see :func:`refuse_memory_storage`); the journal has a bad line
        before its end (:class:`~automl_transfer.storage.journal.JournalCorruptError`) or cannot
        be read or repaired.
    """
    import optuna
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalStorage

    if storage_url is None:
        return JournalStorage(_journal_backend(Path(run_dir) / JOURNAL_NAME, read_only))
    refuse_memory_storage(storage_url)
    scheme = storage_url.partition("://")[0].split("+")[0].lower()
    engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}} if scheme in ("postgresql", "mysql") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return RDBStorage(
                storage_url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=GRACE_INTERVALS * heartbeat_interval,
            )
    except ImportError as error:
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "its database driver"
        raise StorageError(
            f"cannot open storage {redact_url(storage_url)}: the driver {missing!r} is not installed; "
            "for PostgreSQL run `pip install 'automl-transfer[postgres]'`"
        ) from error
    except Exception as error:
        raise StorageError(
            f"cannot open storage {redact_url(storage_url)}: {type(error).__name__}: {first_line(error)}; "
            "check the URL and that the server is up and accepts connections"
        ) from error


def refuse_memory_storage(storage_url: str) -> None:
    """Refuse an SQLite URL without a file (``sqlite://``, ``sqlite:///``, ``:memory:``, ``mode=memory``).

    Such a study lives in one process's memory: it is gone when the search ends, workers cannot
    join it, and the ``resume with:`` line could resume nothing.

    :raises StorageError: for such a URL; any other URL (even a malformed one) passes.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage_url)
    except ArgumentError:
        return  # RDBStorage reports it
    in_memory = not url.database or ":memory:" in url.database or url.query.get("mode") == "memory"
    if url.get_backend_name() == "sqlite" and in_memory:
        raise StorageError(
            f"--storage {storage_url} is an in-memory SQLite database, lost when the process ends; give a file "
            "(sqlite:///runs/study.db), or leave --storage out to keep the study in the run dir's journal"
        )


def _journal_backend(journal: Path, read_only: bool) -> ReadOnlyJournalBackend | TailRepairingJournalBackend:
    """Return the backend of a run dir's journal, checked (and repaired, unless ``read_only``) first.

    :raises StorageError: a bad line before the end, or a journal that cannot be read or repaired.
    """
    from automl_transfer.storage.journal import (  # imports optuna: not at start-up (`--help`)
        ReadOnlyJournalBackend,
        TailRepairingJournalBackend,
        prepare_journal,
        scan_journal,
    )

    try:
        if read_only:
            scan = scan_journal(journal)
            if scan.torn_bytes:
                logger.warning(
                    "warning: %s ends in a torn record (%d bytes, left by a crash or a full disk while writing); what it recorded "
                    "is missing here until the next `automl-transfer search` or `repair` moves it aside",
                    journal, scan.torn_bytes,
                )
            return ReadOnlyJournalBackend(journal)
        for done in prepare_journal(journal):
            logger.warning("warning: %s", done)
        return TailRepairingJournalBackend(journal)
    except OSError as error:
        raise StorageError(
            f"cannot {'read' if read_only else 'open'} {journal}: {error.strerror or error}; "
            "check the run dir's permissions and free space"
        ) from error


def open_run_storage(run_dir: Path, storage_url: str | None = None, read_only: bool = False) -> BaseStorage:
    """Open the storage of an existing search: its journal in ``run_dir``, or ``storage_url``.

    :param read_only: as for :func:`open_storage`.
    :raises RunDirError: ``run_dir`` holds no journal and no URL is given.
    :raises StorageError: as for :func:`open_storage`.
    """
    if storage_url is None and not (Path(run_dir) / JOURNAL_NAME).is_file():
        raise RunDirError(
            f"{run_dir} holds no search (no {JOURNAL_NAME}); start one with "
            f"`automl-transfer search --run-dir {run_dir} ...`, or give its --storage URL"
        )
    return open_storage(run_dir, storage_url, read_only=read_only)


def pick_study(storage: BaseStorage, name: str | None, where: object) -> str:
    """Return the name of the study to use in ``storage``.

    :param name: the study asked for, or ``None`` when the storage should hold exactly one.
    :param where: the run dir or URL, for messages.
    :raises RunDirError: no such study, or several and no ``name``.
    """
    import optuna

    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise RunDirError(f"{where} holds {len(names)} studies ({', '.join(names) or 'none'}); choose one with --study")
        return names[0]
    if name not in names:
        raise RunDirError(f"no study {name!r} in {where}; studies there: {', '.join(names) or 'none'}")
    return name


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` so it can be printed."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def first_line(error: BaseException) -> str:
    """Return the first line of an exception's message."""
    return (str(error).strip().splitlines() or [""])[0]
