"""Lost trials: finding the running trials whose worker is gone, and giving them back.

Each worker records on the trial it claims which process runs it (user attrs ``host``,
``boot_id``, ``pid`` and ``pid_start``, the process's start time, which guards against a
reused pid). A ``RUNNING`` trial is *lost* when

- its process is gone: same host and boot, and the pid no longer exists, is a zombie, or now
  belongs to a process that started at another time (or the host rebooted since);
- in an RDB storage, its heartbeat is older than the storage's grace period (Optuna's
  heartbeat, the only way to notice a dead *machine*);
- in the run dir's journal, it carries no process at all (its worker died while claiming it,
  since claims happen under the run dir's claim lock).

:func:`recover_lost_trials` settles each lost trial, holding the claim lock:

- if ``best/`` holds the trial's model (its worker died between saving the model and telling
  the study), the trial is told ``COMPLETE`` with the saved value, so the study and the best
  model agree;
- otherwise it is told ``FAIL`` with its reason in user attr ``fail_reason``, and a copy with
  the same parameters is enqueued (user attr ``retry_of``) to take its place in the count. A
  trial lost to an interruption is always re-queued; one lost to a dead worker only once (a
  configuration that kills its worker twice stays failed, so a search cannot loop forever).

A process stopped by Ctrl-C or SIGTERM records its own trial as interrupted (see
:mod:`automl_transfer.search.signals`).
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Mapping

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from automl_transfer.errors import RunDirError
from automl_transfer.search.counting import RETRY_OF
from automl_transfer.storage.backends import GRACE_INTERVALS
from automl_transfer.storage.checkpoint import read_best_info
from automl_transfer.storage.optuna_internals import stale_trial_ids, trial_id

#: The reason recorded on a trial stopped by Ctrl-C or SIGTERM.
INTERRUPTED = "interrupted"
#: User attrs naming the process that runs a trial.
PROCESS_ATTRS = ("host", "boot_id", "pid", "pid_start")
#: User attr of a re-queued trial: how many workers died running its configuration.
WORKER_DEATHS = "worker_deaths"
#: User attr of a re-queued trial: the number whose seed it reuses, so it trains the same way.
SEED_TRIAL = "seed_trial"
#: User attr of every trial: the seed it trained with.
TRAIN_SEED = "train_seed"


def process_record(pid: int | None = None) -> dict[str, Any]:
    """Describe a process of this machine so that its death can be told apart from pid reuse.

    :param pid: the process (default: this one).
    :returns: ``{"host", "boot_id", "pid", "pid_start"}``; ``boot_id`` and ``pid_start`` are
        ``None`` where ``/proc`` does not tell them.
    """
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "pid_start": stat[1] if stat else None}


def process_gone(record: Mapping[str, Any]) -> bool:
    """Tell whether the process a trial records has certainly ended.

    :param record: user attrs holding :data:`PROCESS_ATTRS`.
    :returns: ``True`` only for a process of this host that no longer runs; ``False`` when it
        runs, or when it ran on another host (this machine cannot know).
    """
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    boot_id = _boot_id()
    if record.get("boot_id") and boot_id and record["boot_id"] != boot_id:
        return True
    stat = _proc_stat(record["pid"])
    if stat is None:
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    state, start = stat
    return state == "Z" or (record.get("pid_start") is not None and start != record["pid_start"])


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return a process's state letter and start time in clock ticks, from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def find_lost_trials(
    study: optuna.Study, storage: BaseStorage, exit_reasons: Mapping[int, str] | None = None
) -> list[tuple[FrozenTrial, str]]:
    """Find the study's running trials whose worker is gone.

    :param exit_reasons: reasons for workers this process saw end, by pid (``"worker died
        (signal 9 SIGKILL)"``); they win over the generic reasons.
    :returns: ``(trial, reason)`` pairs, in trial order.
    """
    exit_reasons = exit_reasons or {}
    stale_ids = stale_trial_ids(study, storage)
    journal = isinstance(storage, JournalStorage)
    host = socket.gethostname()
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        pid = attrs.get("pid")
        if attrs.get("host") == host and pid in exit_reasons:
            lost.append((trial, exit_reasons[pid]))
        elif pid is None and journal:
            lost.append((trial, "worker died while claiming the trial"))
        elif pid is not None and process_gone(attrs):
            lost.append((trial, f"worker died (process {pid} on {attrs['host']} is gone)"))
        elif trial_id(trial) in stale_ids:
            silent = GRACE_INTERVALS * storage.get_heartbeat_interval()
            lost.append((trial, f"worker lost (no heartbeat from {attrs.get('host', 'its host')} for {silent} s)"))
    return lost


def recover_lost_trials(
    study: optuna.Study, storage: BaseStorage, run_dir: Path, exit_reasons: Mapping[int, str] | None = None
) -> list[tuple[int, str]]:
    """Settle every lost trial (see the module docstring); hold the run dir's claim lock.

    :param exit_reasons: as for :func:`find_lost_trials`.
    :returns: ``(trial number, outcome)`` pairs, outcome ``"completed"``, ``"retried"`` or ``"failed"``.
    """
    settled = []
    for trial, reason in find_lost_trials(study, storage, exit_reasons):
        died = reason != INTERRUPTED
        outcome = settle_lost_trial(study, storage, trial.number, reason, run_dir, died=died)
        if outcome is not None:
            settled.append((trial.number, outcome))
    return settled


def settle_lost_trial(
    study: optuna.Study, storage: BaseStorage, number: int, reason: str, run_dir: Path, died: bool
) -> str | None:
    """Finish one running trial whose worker stopped; hold the run dir's claim lock.

    :param number: the trial's number.
    :param reason: why it stopped, recorded as ``fail_reason``.
    :param died: ``True`` when its worker died (re-queued once), ``False`` for an interruption
        (always re-queued).
    :returns: ``"completed"`` (its model is ``best/``), ``"retried"``, ``"failed"``, or
        ``None`` when the trial had already finished.
    """
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return None
    saved_value = _saved_best_value(run_dir, number)
    if saved_value is not None:
        storage.set_trial_user_attr(trial_id(trial), "recovered", f"its model was saved as best before: {reason}")
        study.tell(number, saved_value, skip_if_finished=True)
        return "completed"
    deaths = trial.user_attrs.get(WORKER_DEATHS, 0) + (1 if died else 0)
    retry = not died or deaths == 1
    if retry and not any(t.user_attrs.get(RETRY_OF) == number for t in study.get_trials(deepcopy=False)):
        retry_attrs = {
            RETRY_OF: number,
            "retry_reason": reason,
            WORKER_DEATHS: deaths,
            SEED_TRIAL: trial.user_attrs.get(SEED_TRIAL, number),
        }
        study.enqueue_trial(trial.params, user_attrs=retry_attrs)
    storage.set_trial_user_attr(trial_id(trial), "fail_reason", reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optuna warns that a failed trial has no value
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return "retried" if retry else "failed"


def _saved_best_value(run_dir: Path, number: int) -> float | None:
    """The value ``best/model.json`` records when it holds trial ``number``'s model, else ``None``."""
    try:
        info = read_best_info(run_dir)
    except RunDirError:
        return None
    if info is None or info.get("trial") != number:
        return None
    value = info.get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
