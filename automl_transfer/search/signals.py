"""Ctrl-C and SIGTERM: the first one stops the search, the ones after it are only counted.

A process stopped this way records its running trial as interrupted (failed and re-queued,
see :mod:`automl_transfer.search.recovery`); :class:`InterruptOnSignals` makes sure that
recording is not interrupted in turn.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


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
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
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
