"""Pruning that never judges a trial inside its learning-rate warm-up.

During the warm-up the learning rate climbs from near zero, so every trial's early scores
say more about the schedule than about the configuration; a pruner that compares them cuts
good trials for nothing. :class:`AfterWarmup` hides a trial from the pruner it wraps until
the trial has reported the epoch after its warm-up ended.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial


class AfterWarmup(optuna.pruners.BasePruner):
    """Defer to ``pruner``, but never prune a trial before the epoch after its warm-up.

    :param pruner: the pruner that judges trials once they are past their warm-up.
    :param default_warmup_epochs: the warm-up assumed for a trial that records no
        ``params["warmup_epochs"]`` user attr.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, default_warmup_epochs: float = 1.0):
        self.pruner = pruner
        self.default_warmup_epochs = default_warmup_epochs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Return whether ``trial`` should stop now: never while its last epoch is within its warm-up."""
        step = trial.last_step
        warmup = trial.user_attrs.get("params", {}).get("warmup_epochs", self.default_warmup_epochs)
        if step is None or step <= math.ceil(warmup):
            return False
        return self.pruner.prune(study, trial)
