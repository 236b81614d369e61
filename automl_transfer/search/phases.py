"""Work outside trials (decoding images, scoring on a test set) reported to the observers.

:class:`Phase` turns a ``progress(done, total)`` callback into ``search_phase`` hook calls:
the first call and the last always reach the observers, the ones between at most every
:data:`REPORT_INTERVAL` seconds, so a phase over thousands of images costs a few dozen hook
calls. Used as a context manager, it always reports the phase's end, even when the work
raises, so a progress display never keeps a line for work that stopped.

Example::

    with Phase("decoding images (224 px)") as progress:
        prepare_data(dataset, 224, progress=progress)
"""

from __future__ import annotations

import time
from types import TracebackType

from automl_transfer.registry import call_observers

#: The shortest time between two reports of the same phase, in seconds.
REPORT_INTERVAL = 0.1


class Phase:
    """One phase of work outside trials, reported through the ``search_phase`` hook.

    :param name: what the phase does, shown to the user (``"decoding images (32 px)"``).
    """

    def __init__(self, name: str):
        self.name = name
        self.total: int | None = None
        self.done = 0
        self.started = False
        self.reported_at = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        """Record progress; tell the observers when it starts, ends, or the last report is old."""
        self.done, self.total = done, total
        now = time.monotonic()
        ends = total is not None and done >= total
        if not self.started or ends or now - self.reported_at >= REPORT_INTERVAL:
            self.started = True
            self.reported_at = now
            call_observers("search_phase", phase=self.name, done=done, total=total)

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        """Report the end of a phase that started and was not reported finished."""
        if self.started and (self.total is None or self.done < self.total):
            total = self.total if self.total is not None else self.done
            call_observers("search_phase", phase=self.name, done=total, total=total)
