"""Joining a search from another process or machine: the public worker API and ``automl-transfer worker``.

:func:`join_search` finds the study a ``search`` command recorded (in a run dir's journal or
an RDB storage), rebuilds the search's settings from the study's record
(:mod:`automl_transfer.search.record`) and attaches to it; the caller then runs
``search.work(study)``. :func:`work` does both: it is one worker, for a SLURM array task, a
Kubernetes Job or a Ray task. Both are exported as ``automl_transfer.join_search`` and
``automl_transfer.work``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

from automl_transfer.errors import AutoMLTransferError, RunDirError
from automl_transfer.registry import load_plugins
from automl_transfer.search.record import StudyRecord
from automl_transfer.search.search import TransferSearch
from automl_transfer.search.signals import interrupt_on_signals
from automl_transfer.storage.backends import (
    HEARTBEAT_INTERVAL,
    open_run_storage,
    open_storage,
    pick_study,
)


def join_search(
    run_dir: str | Path | None = None,
    storage: str | None = None,
    study: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    heartbeat_interval: int | None = None,
    follow_cwd: bool = False,
) -> tuple[TransferSearch, optuna.Study]:
    """Open a search that ``automl-transfer search`` started, to run some of its trials.

    The dataset, space, metric and settings come from the study's record; the dataset must
    have the same fingerprint as when the search started.

    :param run_dir: the search's run dir (its journal is the storage unless ``storage`` is given).
    :param storage: an RDB URL; the run dir then defaults to the one the search recorded
        (on a shared file system, so that every machine sees ``best/``).
    :param study: the study name; may be left out when the storage holds one study.
    :param device: where this worker trains.
    :param quiet: no per-trial lines.
    :param heartbeat_interval: seconds between heartbeats in an RDB storage (default: the
        search's, which every worker must share: a trial is lost after three silent intervals).
    :param follow_cwd: change to the directory the search was started from, so relative
        dataset paths mean the same (for worker processes).
    :returns: ``(search, study)``; call ``search.work(study)``.
    :raises AutoMLTransferError: no such search, changed data, or a bad device or storage.
    """
    if run_dir is None and storage is None:
        raise AutoMLTransferError("give the search to join: --run-dir DIR, or --storage URL --study NAME")
    load_plugins()
    run_dir = Path(run_dir).absolute() if run_dir is not None else None
    backend = open_run_storage(run_dir, storage) if storage is None else open_storage(run_dir, storage)
    name = pick_study(backend, study, run_dir or storage)
    record = StudyRecord.read(optuna.load_study(study_name=name, storage=backend))
    if record is None:
        raise RunDirError(
            f"study {name!r} was not started by this version of `automl-transfer search`; "
            "run the search command once to record its settings, then start workers"
        )
    if follow_cwd and Path(record.job.cwd).is_dir():
        os.chdir(record.job.cwd)
    config = record.search_config(
        name,
        run_dir=run_dir,
        storage=storage,
        device=device,
        quiet=quiet,
        heartbeat_interval=heartbeat_interval or record.job.heartbeat_interval or HEARTBEAT_INTERVAL,
    )
    search = TransferSearch(config)
    return search, search.attach()


def work(
    run_dir: str | Path | None = None,
    storage: str | None = None,
    study: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
    follow_cwd: bool = False,
) -> int:
    """Be one worker of a recorded search: join it and run its trials in this process until none is left.

    The Python form of ``automl-transfer worker``, for a SLURM array task, a Kubernetes Job or a
    Ray task. Trials are claimed one at a time, so any number of workers together finish exactly
    the trial count the latest ``search`` command asked for. In the main thread, the first
    Ctrl-C or SIGTERM stops the worker: its running trial is recorded ``interrupted`` and re-queued.

    Example, one PostgreSQL search and a worker per SLURM array task::

        import automl_transfer
        automl_transfer.work(storage="postgresql://user:pw@db/automl", study="pets", device="cuda")

    :param timeout: claim no trial after this many seconds (the running one finishes).
    :param run_dir: and ``storage``, ``study``, ``device``, ``quiet``, ``heartbeat_interval``,
        ``follow_cwd``: as for :func:`join_search`.
    :returns: how many of the study's trials have finished (complete, pruned or failed), by every worker.
    :raises AutoMLTransferError: no such search, changed data, or a bad device or storage.
    :raises KeyboardInterrupt: after a stop signal, once the running trial was recorded as interrupted.
    """
    with interrupt_on_signals():
        search, joined = join_search(run_dir, storage, study, device, quiet, heartbeat_interval, follow_cwd)
        search.work(joined, None if timeout is None else time.monotonic() + timeout)
    return search.finished(joined)
