"""Claiming trials: which process runs which trial, decided one process at a time.

Every process of a search (the ``search`` command, each worker, here or on another machine
sharing the run dir) takes the run dir's claim lock before it looks at the study to take a
trial, so the count of ``--trials`` is met exactly: lost trials are recovered first, then a
waiting (enqueued) trial is taken or a new one asked for while the counted trials fall short,
and the claiming process is recorded on the trial before the lock is let go.
"""

from __future__ import annotations

import contextlib
import fcntl
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from automl_transfer.search.counting import trial_counts
from automl_transfer.search.recovery import process_record, recover_lost_trials
from automl_transfer.storage.optuna_internals import record_heartbeat
from automl_transfer.storage.run_dir import CLAIM_LOCK_NAME

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage


@contextlib.contextmanager
def claim_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's claim lock (``flock``: not re-entrant, never nest it)."""
    with open(Path(run_dir) / CLAIM_LOCK_NAME, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def open_trials(study: optuna.Study, target: int) -> int:
    """Return how many trials are waiting or not yet claimed, for a search of ``target`` trials."""
    counts = trial_counts(study)
    return counts["n_waiting"] + max(0, target - counts["n_taken"])


def claim_trial(
    study: optuna.Study,
    storage: BaseStorage,
    run_dir: Path,
    target: Callable[[], int],
    sampler_for: Callable[[int], optuna.samplers.BaseSampler],
) -> optuna.Trial | None:
    """Take a waiting trial, or ask a new one while the counted trials fall short of the target.

    :param target: returns the trial count the search should reach (read at every claim).
    :param sampler_for: returns the sampler to ask with, given the number of trials so far
        (seeded by it: reproducible, and parallel workers sample different trials).
    :returns: the claimed trial, its process recorded in user attrs; ``None`` when no trial
        is left to run.
    """
    with claim_lock(run_dir):
        recover_lost_trials(study, storage, run_dir)
        if open_trials(study, target()) == 0:
            return None
        study.sampler = sampler_for(len(study.get_trials(deepcopy=False)))
        with warnings.catch_warnings():
            # ask-and-tell runs its own heartbeat thread (see TransferSearch.work); optuna expects optimize().
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        for key, value in process_record().items():
            trial.set_user_attr(key, value)
        record_heartbeat(trial, storage)  # a first heartbeat before the lock goes: never unwatched
    return trial
