"""How one trial trains: :class:`TrialSettings`, the trainer's side of the trial parameters.

Its fields are the trial settings the trainer reads, made from the trial-settings table
(:mod:`automl_transfer.contract.trial_settings`), and the fit's own (device, seed ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

import torch

from automl_transfer.contract.trial_settings import trial_fields
from automl_transfer.data.augmentations import AUGMENTATIONS
from automl_transfer.training.params import table_fields

#: The validation metrics that can pick a fit's best epoch, and whether higher is better.
MONITORED = {"accuracy": True, "macro_f1": True, "val_loss": False}


class _TrialSettingsChecks:
    """How one trial trains: a field per trial setting the trainer reads (``trains`` in
    :data:`~automl_transfer.contract.trial_settings.SETTINGS`; lr, weight_decay, l2sp, l1, epochs,
    batch_size, label_smoothing, augment, warmup_epochs, min_steps, patience: their help in the
    table says what each means, the trainer's modules how it is applied), then how this fit runs:

    - ``weight_decay`` is AdamW's decoupled decay on the head's matrices, and on the backbone's
      when ``l2sp`` is 0; norm scales, biases and other 1-d parameters are never decayed.
    - ``l2sp`` is the penalty ``l2sp / 2 * sum ||w - w0||^2`` over the trainable backbone
      parameters, ``w0`` their values when the fit started; above 0 it replaces weight decay on
      the backbone. ``l1`` is ``l1 * sum |w|`` over the trainable weight matrices and kernels.
      Both are regularizer plugins (``automl_transfer_plugins.regularizers``), as are DELTA and
      BSS; ``extra`` holds the settings regularizer and batch-transform plugins declare.
    - A pass over the training split is cut into ``ceil(n / batch_size)`` near-equal batches;
      ``min_steps`` makes every epoch several passes when ``epochs`` passes make fewer steps.
    - ``augment`` is a key of :data:`~automl_transfer.data.augmentations.AUGMENTATIONS`;
      ``True`` and ``False`` mean ``strong`` and ``none``. ``warmup_epochs`` is at most half the run.
    - Whether or not ``patience`` stops it early, the fit ends with its best epoch's weights.

    A setting left out takes the table's ``absent`` value, or its default when that is one
    value (``lr`` must be given).

    :param monitor: the validation metric that picks the best epoch: ``accuracy``,
        ``macro_f1`` (higher is better; ties go to the lower ``val_loss``) or ``val_loss``.
    :param reuse_frozen: without augmentation, compute the frozen layers' output once and
        train the rest on it (:mod:`automl_transfer.training.frozen_prefix`); ``False``
        runs the whole network every step (same metrics up to float rounding).
    :param device: where to train.
    :param compile: wrap the model in ``torch.compile`` (on CUDA only; ignored on the CPU).
    :param min_batch_size: the smallest batch :func:`fit_with_oom_retry` tries.
    :param seed: seeds the shuffling, the augmentation and the global torch RNG (dropout)
        during the fit; the caller's RNG state is restored afterwards.
    :raises ValueError: a count below 1, an unknown ``augment`` or ``monitor``.
    """

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "min_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrialSettings.{name} must be at least 1, got {getattr(self, name)}")
        if isinstance(self.augment, bool):
            self.augment = "strong" if self.augment else "none"
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"TrialSettings.augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if self.monitor not in MONITORED:
            raise ValueError(f"TrialSettings.monitor must be one of {', '.join(MONITORED)}, not {self.monitor!r}")


#: How one trial trains: the table's trained settings, then the fit's own (see ``_TrialSettingsChecks``).
TrialSettings = dataclasses.make_dataclass(
    "TrialSettings",
    [
        *table_fields(tuple(setting for setting in trial_fields() if setting.trains)),
        ("monitor", str, field(default="accuracy")),
        ("reuse_frozen", bool, field(default=True)),
        ("device", torch.device, field(default_factory=lambda: torch.device("cpu"))),
        ("compile", bool, field(default=False)),
        ("min_batch_size", int, field(default=8)),
        ("seed", int, field(default=0)),
    ],
    bases=(_TrialSettingsChecks,),
    kw_only=True,
)
TrialSettings.__module__ = __name__  # make_dataclass names no module before Python 3.12
TrialSettings.__doc__ = _TrialSettingsChecks.__doc__
