"""Ctrl-C and SIGTERM: the first one stops the search, the ones after it are only counted.

A process stopped this way records its running trial as interrupted (failed and re-queued,
see :mod:`automl_transfer.search.recovery`); :class:`InterruptOnSignals` makes sure that
recording is not interrupted in turn. The stop is also remembered: a ``KeyboardInterrupt``
raised where a library swallows it would otherwise leave the process working on, so the search
calls :func:`raise_if_stopped` between trials and after every epoch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: Set by the first signal while :class:`InterruptOnSignals` is installed; cleared when it is removed.
_stop_requested = threading.Event()


def raise_if_stopped() -> None:
    """Raise ``KeyboardInterrupt`` when a stop signal came, even if the first one's exception was lost.

    :raises KeyboardInterrupt: a SIGINT or SIGTERM was received.
    """
    if _stop_requested.is_set():
        raise KeyboardInterrupt("stop requested")


class InterruptOnSignals:
    """Turn the first SIGINT or SIGTERM into ``KeyboardInterrupt``; count, but swallow, the rest.

    A trial being recorded as interrupted must not be interrupted in turn, so only the first
    signal raises. Use as a context manager; the previous handlers come back on exit.

    :ivar count: the signals received so far.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "InterruptOnSignals":
        _stop_requested.clear()
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        _stop_requested.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        _stop_requested.set()
        if self.count == 1:
            raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[InterruptOnSignals]:
    """Install :class:`InterruptOnSignals` in the main thread (elsewhere, only count nothing).

    :returns: the handler object, whose ``count`` says how many signals came.
    """
    signals = InterruptOnSignals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    with signals:
        yield signals
