"""How a trial can fail as an outcome of its parameters (not a user error): each has a reason."""

from __future__ import annotations


class TrialFailed(Exception):
    """A trial that cannot finish: an outcome of its parameters, not a user error.

    :attr reason: a short text for ``trial_end`` and the study (``"non-finite loss"`` ...).
    """

    reason = "failed"


class NonFiniteLossError(TrialFailed):
    """The training loss became NaN or infinite (usually a learning rate too high)."""

    reason = "non-finite loss"


class OutOfMemoryTrialError(TrialFailed):
    """CUDA ran out of memory even at the smallest batch size allowed."""

    reason = "out of memory"
