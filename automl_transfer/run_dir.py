"""The run directory: where a search keeps its Optuna storage, best model and summary.

Layout of ``runs/<study-name>/``::

    study.journal      Optuna's JournalStorage (file backend): safe for many processes
    best/              the best model so far (a symlink swapped atomically, see checkpoint.py)
    summary.json       the metric, best value and params, and trial counts
    cache/             decoded images, reused across trials, workers and resumes
    .claim.lock        taken while a worker claims a trial or recovers lost ones

How trials count toward ``--trials N``: complete, pruned and failed trials count, and so do
running and waiting (enqueued) ones, as they will finish. A trial lost to a dead worker or
an interruption is failed and re-queued with the same parameters (see
:mod:`automl_transfer.recovery`); the re-queued trial takes its place in the count, so the
lost one does not count. A search therefore ends with exactly ``N`` counted trials.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from automl_transfer import checkpoint
from automl_transfer.errors import RunDirError, StorageError

JOURNAL_NAME = "study.journal"
SUMMARY_NAME = "summary.json"
CACHE_NAME = "cache"
#: Seconds between the heartbeats a trial records in an RDB storage.
HEARTBEAT_INTERVAL = 30
#: A trial whose heartbeat is older than this many intervals is taken for lost.
GRACE_INTERVALS = 3
#: Seconds to wait for a PostgreSQL or MySQL server to answer before giving up.
CONNECT_TIMEOUT = 10
#: The user attr a re-queued trial holds: the number of the trial it replaces.
RETRY_OF = "retry_of"


def check_run_dir(run_dir: Path) -> Path:
    """Check that ``run_dir`` can be used, without creating or changing anything.

    An existing directory must be writable; for a new one, its nearest existing parent must be
    a writable directory.

    :returns: the absolute run directory.
    :raises RunDirError: naming the directory and what is wrong with it.
    """
    run_dir = Path(run_dir).absolute()
    if run_dir.exists():
        if not run_dir.is_dir():
            raise RunDirError(f"run dir {run_dir} is a file, not a directory; choose another --run-dir")
        _check_writable(run_dir)
        return run_dir
    parent = run_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirError(f"run dir {run_dir} cannot be created: {parent} is a file; choose another --run-dir")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(
            f"run dir {run_dir} cannot be created: {parent} is not writable; "
            "choose another --run-dir or fix its permissions"
        )
    return run_dir


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` if needed and check that it can be written.

    :returns: the absolute run directory.
    :raises RunDirError: the directory cannot be created or written.
    """
    run_dir = Path(run_dir).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(
            f"run dir {run_dir} is not writable ({error.strerror or error}); "
            "choose another with --run-dir or fix its permissions"
        ) from error
    _check_writable(run_dir)
    return run_dir


def _check_writable(run_dir: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise RunDirError(
            f"run dir {run_dir} is not writable ({error.strerror or error}); "
            "choose another with --run-dir or fix its permissions"
        ) from error


def open_storage(
    run_dir: Path, storage_url: str | None = None, heartbeat_interval: int = HEARTBEAT_INTERVAL
) -> BaseStorage:
    """Open the Optuna storage of a search.

    :param run_dir: the run directory; without ``storage_url`` the journal file in it is used
        (the directory must exist).
    :param storage_url: an RDB URL (``postgresql://...``, ``sqlite:///...``) for searches that
        span machines.
    :param heartbeat_interval: seconds between the heartbeats each running trial records in an
        RDB storage; a trial silent for :data:`GRACE_INTERVALS` intervals is taken for lost.
    :returns: the storage.
    :raises StorageError: the URL cannot be reached or opened.
    """
    if storage_url is None:
        journal = str(Path(run_dir) / JOURNAL_NAME)
        return JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))
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


def replaced_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Return the numbers of the lost trials that a re-queued trial replaces (they do not count)."""
    return {trial.user_attrs[RETRY_OF] for trial in trials if RETRY_OF in trial.user_attrs}


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Count a study's trials by outcome, as they count toward ``--trials``.

    :returns: ``{"n_complete", "n_pruned", "n_failed", "n_running", "n_waiting", "n_replaced",
        "n_taken"}``: ``n_replaced`` counts the lost trials a re-queued trial replaces, which
        are left out of every other count; ``n_taken`` is the sum of the first five.
    """
    trials = study.get_trials(deepcopy=False)
    replaced = replaced_numbers(trials)
    counts = {"n_complete": 0, "n_pruned": 0, "n_failed": 0, "n_running": 0, "n_waiting": 0, "n_replaced": 0}
    keys = {
        TrialState.COMPLETE: "n_complete",
        TrialState.PRUNED: "n_pruned",
        TrialState.FAIL: "n_failed",
        TrialState.RUNNING: "n_running",
        TrialState.WAITING: "n_waiting",
    }
    for trial in trials:
        if trial.number in replaced:
            counts["n_replaced"] += 1
        elif trial.state in keys:
            counts[keys[trial.state]] += 1
    counts["n_taken"] = sum(counts[key] for key in keys.values())
    return counts


def best_trial(study: optuna.Study, run_dir: Path | None = None) -> FrozenTrial | None:
    """Return the study's best complete trial; among equally good ones, the one saved in ``best/``.

    Parallel workers may finish equally good trials in any order; the one whose model was
    saved first stays in ``best/``, so that is the one reported.

    :param run_dir: the run directory whose ``best/model.json`` breaks ties (``None``: Optuna's choice).
    :returns: the trial, or ``None`` before a trial completes.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    try:
        saved = checkpoint.read_best_info(run_dir) if run_dir is not None else None
    except RunDirError:
        saved = None
    if saved is not None:
        for trial in completed:
            if trial.number == saved.get("trial") and trial.value == best.value:
                return trial
    return best


def build_summary(study: optuna.Study, metric: str, run_dir: Path | None = None) -> dict[str, Any]:
    """Describe a study as ``summary.json`` holds it.

    :param run_dir: the run directory, whose best model decides between equally good trials.
    :returns: ``{"metric", "best_value", "best_params", "best_trial", "n_complete",
        "n_pruned", "n_failed"}``; the best fields are ``None`` before a trial completes;
        ``n_failed`` leaves out lost trials that a re-queued trial replaced.
    """
    counts = trial_counts(study)
    best = best_trial(study, run_dir)
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
