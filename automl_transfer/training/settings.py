"""How one trial trains: :class:`TrialSettings`, the trainer's side of the trial parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from automl_transfer.data.augmentations import AUGMENTATIONS

#: The validation metrics that can pick a fit's best epoch, and whether higher is better.
MONITORED = {"accuracy": True, "macro_f1": True, "val_loss": False}


@dataclass
class TrialSettings:
    """How one trial trains.

    :param lr: the peak learning rate, reached after the warmup.
    :param weight_decay: AdamW's decoupled weight decay on the head's matrices, and on the
        backbone's when ``l2sp`` is 0. Norm scales, biases and other 1-d parameters are never
        decayed.
    :param l2sp: strength of the L2-SP penalty ``l2sp / 2 * sum ||w - w0||^2`` over the
        trainable backbone parameters, ``w0`` being their values when the fit started. When it
        is above 0 it replaces weight decay on the backbone (decay toward the pretrained point
        instead of toward zero); 0 disables it at no cost.
    :param l1: strength of the L1 penalty ``l1 * sum |w|`` over the trainable weight matrices
        and kernels; 0 disables it.
    :param epochs: the epochs to train for, each validated (at least 1).
    :param batch_size: images per optimiser step, at most: a pass over the training split is
        cut into ``ceil(n / batch_size)`` batches of near-equal size, so no image is left out
        of a pass and no batch is a lone image unless the split is.
    :param label_smoothing: ``nn.CrossEntropyLoss``'s label smoothing for the training loss.
    :param augment: how strongly images are cropped and flipped while training, a key of
        :data:`~automl_transfer.data.augmentations.AUGMENTATIONS` (``none``, ``light``, ``strong``);
        ``True`` and ``False`` mean ``strong`` and ``none``.
    :param warmup_epochs: length of the linear warmup, at most half of the run.
    :param min_steps: the fewest optimiser steps the whole fit takes: when ``epochs`` passes
        over a small training split make fewer, every epoch makes several passes.
    :param patience: stop when this many epochs in a row did not improve the monitored
        metric (0: train every epoch). Whether or not it stops early, the fit ends with the
        weights of its best epoch.
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
    """

    lr: float
    weight_decay: float
    l2sp: float
    epochs: int
    batch_size: int
    label_smoothing: float
    augment: str | bool
    warmup_epochs: float = 1.0
    l1: float = 0.0
    min_steps: int = 0
    patience: int = 0
    monitor: str = "accuracy"
    reuse_frozen: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile: bool = False
    min_batch_size: int = 8
    seed: int = 0

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
