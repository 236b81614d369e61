"""The run directory: where a search keeps its Optuna storage, best model and summary.

Layout of ``runs/<study-name>/``::

    study.journal      Optuna's JournalStorage (file backend): safe for many processes
    best/              the best model so far (a symlink swapped atomically, see checkpoint.py)
    summary.json       the metric, best value and params, and trial counts
    cache/             decoded images, reused across trials, workers and resumes
    .claim.lock        taken while a worker claims a trial or recovers lost ones

The Optuna storage is opened by :mod:`automl_transfer.storage.backends`, the best model kept by
:mod:`automl_transfer.storage.checkpoint`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from automl_transfer.errors import RunDirError

JOURNAL_NAME = "study.journal"
SUMMARY_NAME = "summary.json"
CACHE_NAME = "cache"
#: The lock file taken while a worker claims a trial or recovers lost ones.
CLAIM_LOCK_NAME = ".claim.lock"


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
