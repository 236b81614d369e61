"""Parallel workers: start them on one machine, watch them, replace the ones that die; join from anywhere.

``automl-transfer search --workers K`` checks its inputs and opens the study, then a
:class:`Supervisor` starts ``K`` processes of ``automl-transfer worker`` (the very command a
user runs on another machine to join), round-robin over the devices. Every worker draws
trials from the same study until none is left. When a worker ends abnormally (a signal such
as SIGKILL or SIGSEGV, or a crash) the supervisor has its trial recovered (see
:mod:`automl_transfer.search.recovery`: failed with the reason, re-queued once) and starts a
replacement while trials remain.

On Ctrl-C or SIGTERM the supervisor forwards SIGTERM to the workers, which record their
running trials as ``interrupted`` and exit; whatever is still alive after
:data:`STOP_GRACE_SECONDS` (or after a second Ctrl-C) is killed and its trial recorded as
interrupted all the same. Workers also receive SIGTERM when the supervisor itself dies
(Linux ``PR_SET_PDEATHSIG``), so no orphan keeps training.

The worker's side is :mod:`automl_transfer.search.join`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

from automl_transfer.errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    AutoMLTransferError,
)
from automl_transfer.registry import DISABLE_ENV, disabled_plugins
from automl_transfer.search.config import SearchConfig
from automl_transfer.search.signals import InterruptOnSignals

if TYPE_CHECKING:
    import optuna


class SupervisedSearch(Protocol):
    """What :func:`run_workers` needs of the search it runs (a :class:`TransferSearch` is one).

    :ivar config: the search's settings.
    :ivar devices: the devices to hand the workers, round-robin.
    """

    config: SearchConfig
    devices: list[str]

    def open_trials(self, study: optuna.Study) -> int:
        """Return how many trials are waiting or not yet claimed."""

    def recover(self, study: optuna.Study, exit_reasons: Mapping[int, str]) -> None:
        """Settle the trials of workers that ended, given their exit reasons by pid."""

#: Seconds interrupted workers get to record their trials before they are killed.
STOP_GRACE_SECONDS = 60.0
#: Seconds between two looks at the workers.
POLL_SECONDS = 0.2
#: Environment variable holding the storage URL, so that no password shows in a process list.
STORAGE_ENV = "AUTOML_TRANSFER_STORAGE"
_PR_SET_PDEATHSIG = 1


def exit_reason(returncode: int) -> str:
    """Describe how a worker ended, as a trial's ``fail_reason`` records it.

    :returns: e.g. ``"worker died (signal 9 SIGKILL)"``, ``"interrupted"``,
        ``"worker crashed (exit code 1)"``.
    """
    if returncode < 0:
        try:
            name = f" {signal.Signals(-returncode).name}"
        except ValueError:
            name = ""
        return f"worker died (signal {-returncode}{name})"
    if returncode == EXIT_INTERRUPTED:
        return "interrupted"
    return f"worker crashed (exit code {returncode})"


@dataclass
class WorkerProcess:
    """One started worker: its slot (0..K-1), device and process."""

    slot: int
    device: str
    process: subprocess.Popen


class Supervisor:
    """Keep ``count`` worker processes running while the study has trials to give out.

    :param command: ``command(device, seconds_left)`` returns the worker's argument list;
        ``seconds_left`` is ``None`` without a timeout.
    :param devices: the devices, given to the workers round-robin.
    :param count: how many workers run at once.
    :param has_work: tells whether a trial is still waiting or unclaimed.
    :param recover: ``recover({pid: reason})`` settles the trials of workers that ended.
    :param signals: the parent's :class:`InterruptOnSignals` (a second signal stops the wait
        for interrupted workers).
    :param env: extra environment variables for every worker.
    :param deadline: a ``time.monotonic()`` after which no worker is started.
    :param max_restarts: replacements allowed before the search gives up on dying workers.
    """

    def __init__(
        self,
        command: Callable[[str, float | None], list[str]],
        devices: Sequence[str],
        count: int,
        has_work: Callable[[], bool],
        recover: Callable[[Mapping[int, str]], None],
        signals: InterruptOnSignals,
        env: Mapping[str, str] | None = None,
        deadline: float | None = None,
        max_restarts: int = 10,
    ):
        self.command = command
        self.devices = list(devices)
        self.count = count
        self.has_work = has_work
        self.recover = recover
        self.signals = signals
        self.env = {**os.environ, **(env or {})}
        self.deadline = deadline
        self.max_restarts = max_restarts
        self.workers: list[WorkerProcess] = []
        self.restarts = 0
        self.refused = 0

    def run(self) -> None:
        """Start the workers and return when all have ended and no trial is left for them.

        :raises KeyboardInterrupt: after the workers were stopped and their trials recorded.
        :raises AutoMLTransferError: every worker stopped with an error (exit code 2), or workers kept dying.
        """
        try:
            for slot in range(self.count):
                self._start(slot)
            while self.workers:
                time.sleep(POLL_SECONDS)
                self._reap()
        except KeyboardInterrupt:
            self._stop()
            raise
        if self.refused and self.refused >= self.count:
            raise AutoMLTransferError(
                "every worker stopped with an error (bad input, a full disk ...): see their messages above"
            )

    def _start(self, slot: int) -> None:
        seconds_left = None if self.deadline is None else self.deadline - time.monotonic()
        device = self.devices[slot % len(self.devices)]
        process = subprocess.Popen(self.command(device, seconds_left), env=self.env, preexec_fn=_die_with_parent)
        self.workers.append(WorkerProcess(slot, device, process))

    def _reap(self) -> None:
        """Handle the workers that ended since the last look."""
        ended = [worker for worker in self.workers if worker.process.poll() is not None]
        if not ended:
            return
        reasons = {
            worker.process.pid: exit_reason(worker.process.returncode) for worker in ended if worker.process.returncode
        }
        if reasons:
            self.recover(reasons)
        for worker in ended:
            self.workers.remove(worker)
            code = worker.process.returncode
            if code == EXIT_USER_ERROR:
                self.refused += 1
            elif code != 0 and self._may_start():
                if self.restarts >= self.max_restarts:
                    self._stop()
                    raise AutoMLTransferError(
                        f"workers kept dying ({self.restarts} replaced, the last: {reasons[worker.process.pid]}); "
                        "see their messages above, then run the same command again to resume"
                    )
                self.restarts += 1
                self._start(worker.slot)

    def _may_start(self) -> bool:
        return (self.deadline is None or time.monotonic() < self.deadline) and self.has_work()

    def _stop(self) -> None:
        """Stop every worker: SIGTERM, a grace period, then SIGKILL; record their trials."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        signals_before = self.signals.count
        give_up = time.monotonic() + STOP_GRACE_SECONDS
        while any(w.process.poll() is None for w in self.workers):
            if time.monotonic() > give_up or self.signals.count > max(signals_before, 1):
                break
            time.sleep(POLL_SECONDS)
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        self.recover({worker.process.pid: "interrupted" for worker in self.workers})
        self.workers = []


def _die_with_parent() -> None:
    """In a new worker (before exec): ask Linux to send it SIGTERM when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


def run_workers(
    search: SupervisedSearch, study: optuna.Study, deadline: float | None, signals: InterruptOnSignals
) -> None:
    """Run the search's trials in ``search.config.workers`` processes of ``automl-transfer worker``.

    :param deadline: a ``time.monotonic()`` after which no worker is started.
    :param signals: the parent's signal handler; a second Ctrl-C stops waiting for workers.
    :raises KeyboardInterrupt: after the workers stopped and their trials were recorded.
    """
    count = min(search.config.workers, search.open_trials(study))
    if count == 0:
        return
    env = {DISABLE_ENV: ",".join(disabled_plugins())}
    if search.config.storage is not None:
        env[STORAGE_ENV] = search.config.storage
    threads = None
    if all(device == "cpu" for device in search.devices):
        threads = max(1, (os.cpu_count() or 1) // count)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def command(device: str, seconds_left: float | None) -> list[str]:
        arguments = [sys.executable, "-m", "automl_transfer", "worker", "--run-dir", str(search.config.run_dir)]
        arguments += ["--study", search.config.study, "--device", device]
        arguments += ["--heartbeat-interval", str(search.config.heartbeat_interval)]
        if threads is not None:
            arguments += ["--threads", str(threads)]
        if seconds_left is not None:
            arguments += ["--timeout", str(max(1, round(seconds_left)))]
        return arguments + (["--quiet"] if search.config.quiet else [])

    Supervisor(
        command,
        search.devices,
        count,
        has_work=lambda: search.open_trials(study) > 0,
        recover=lambda reasons: search.recover(study, reasons),
        signals=signals,
        env=env,
        deadline=deadline,
        max_restarts=2 * search.config.trials + count,
    ).run()
