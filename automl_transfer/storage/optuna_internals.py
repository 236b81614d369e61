"""The few private Optuna names the search needs, in one place.

A search drives Optuna with ask-and-tell so that every trial keeps its reason and the trial
count is exact across processes; ``study.optimize`` would run the heartbeat thread itself, but
ask-and-tell has no public way to do so. Recovering a lost trial that already saved the best
model must *complete* it with the saved value, whereas the public
``optuna.storages.fail_stale_trials`` can only fail it, so the stale-trial query is called
directly. Both need a trial's storage id, which Optuna keeps private too. Checking a journal
line before Optuna replays it (:mod:`automl_transfer.storage.journal`) needs the operation codes
the replay accepts, which only Optuna's private journal module lists. Everything else uses
Optuna's public API. Checked against optuna 5.0.0 (``constraints.txt``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from optuna.storages._heartbeat import (
    BaseHeartbeat,
    get_heartbeat_thread,
    is_heartbeat_enabled,
)
from optuna.storages.journal._storage import JournalOperation

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage


def trial_id(trial: Any) -> int:
    """Return the storage id of an ``optuna.Trial`` or ``FrozenTrial``."""
    return trial._trial_id


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Return whether ``storage`` records heartbeats (an RDB storage with an interval)."""
    return is_heartbeat_enabled(storage)


def start_heartbeat(trial: optuna.Trial, storage: BaseStorage) -> Any:
    """Start recording ``trial``'s heartbeat in ``storage`` (a no-op thread without heartbeats).

    :returns: the thread; call its ``join()`` when the trial ends.
    """
    heartbeat = get_heartbeat_thread(trial_id(trial), storage)
    heartbeat.start()
    return heartbeat


def record_heartbeat(trial: optuna.Trial, storage: BaseStorage) -> None:
    """Record one heartbeat of ``trial`` now, when ``storage`` keeps heartbeats."""
    if is_heartbeat_enabled(storage):
        storage.record_heartbeat(trial_id(trial))


def stale_trial_ids(study: optuna.Study, storage: BaseStorage) -> set[int]:
    """Return the ids of running trials whose heartbeat is older than the storage's grace period."""
    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        return set()
    return set(storage._get_stale_trial_ids(study._study_id))


@lru_cache(maxsize=1)
def journal_op_codes() -> frozenset[int]:
    """Return the operation codes Optuna's journal replay applies (a record with another code stops it)."""
    return frozenset(int(operation) for operation in JournalOperation)
