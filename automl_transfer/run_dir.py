"""The run directory: where a search keeps its Optuna storage, best model and summary.

Layout of ``runs/<study-name>/``::

    study.journal      Optuna's JournalStorage (file backend): safe for many processes
    best/              the best model so far (a symlink swapped atomically, see checkpoint.py)
    summary.json       the metric, best value and params, and trial counts
    cache/             decoded images, reused across trials, workers and resumes
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState

from automl_transfer.errors import RunDirError, StorageError

JOURNAL_NAME = "study.journal"
SUMMARY_NAME = "summary.json"
CACHE_NAME = "cache"


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` if needed and check that it can be written.

    :returns: the absolute run directory.
    :raises RunDirError: the directory cannot be created or written.
    """
    run_dir = Path(run_dir).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise RunDirError(
            f"run dir {run_dir} is not writable ({error.strerror or error}); "
            "choose another with --run-dir or fix its permissions"
        ) from error
    return run_dir


def open_storage(run_dir: Path, storage_url: str | None = None) -> BaseStorage:
    """Open the Optuna storage of a search.

    :param run_dir: the run directory; without ``storage_url`` the journal file in it is used.
    :param storage_url: an RDB URL (``postgresql://...``, ``sqlite:///...``) for searches that
        span machines; RDB storages get a heartbeat so a dead machine's trial is failed.
    :returns: the storage.
    :raises StorageError: the URL cannot be reached or opened.
    """
    if storage_url is None:
        journal = str(Path(run_dir) / JOURNAL_NAME)
        return JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))
    try:
        return RDBStorage(storage_url, heartbeat_interval=30, grace_period=120)
    except Exception as error:
        raise StorageError(
            f"cannot open storage {redact_url(storage_url)}: {type(error).__name__}: {first_line(error)}; "
            "check the URL, that the server is up and that its driver (e.g. psycopg2) is installed"
        ) from error


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


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Count a study's trials by outcome.

    :returns: ``{"n_complete", "n_pruned", "n_failed", "n_running"}``.
    """
    counts = {"n_complete": 0, "n_pruned": 0, "n_failed": 0, "n_running": 0}
    keys = {
        TrialState.COMPLETE: "n_complete",
        TrialState.PRUNED: "n_pruned",
        TrialState.FAIL: "n_failed",
        TrialState.RUNNING: "n_running",
    }
    for trial in study.get_trials(deepcopy=False):
        if trial.state in keys:
            counts[keys[trial.state]] += 1
    return counts


def build_summary(study: optuna.Study, metric: str) -> dict[str, Any]:
    """Describe a study as ``summary.json`` holds it.

    :returns: ``{"metric", "best_value", "best_params", "best_trial", "n_complete",
        "n_pruned", "n_failed"}``; the best fields are ``None`` before a trial completes.
    """
    counts = trial_counts(study)
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    if completed:
        best = study.best_trial
    return {
        "metric": metric,
        "best_value": best.value if best else None,
        "best_params": best.user_attrs.get("params", best.params) if best else None,
        "best_trial": best.number if best else None,
        "n_complete": counts["n_complete"],
        "n_pruned": counts["n_pruned"],
        "n_failed": counts["n_failed"],
    }


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as JSON to ``path`` so that readers see the old or the new file, never half of one."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o666 & ~current_umask())
    os.replace(handle.name, path)


def current_umask() -> int:
    """Return the process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
