"""Fine-tune one trial's model and score it on the validation split every epoch.

:func:`fit` trains a :class:`TransferModel` whose first backbone groups are frozen:
AdamW (no weight decay on norm scales, biases and other 1-d parameters; frozen parameters
get no optimiser state), a per-step linear warmup and cosine decay, label smoothing and
L2-SP toward the backbone weights the fit started from. :func:`fit_with_oom_retry` halves
the batch size when CUDA runs out of memory; :mod:`automl_transfer.training.evaluation` scores a
model on a split.

The same code runs on CPU and CUDA. On CUDA the forward pass runs under bf16 autocast with
channels-last tensors, data is uploaded to the GPU once per fit (see
:mod:`automl_transfer.data.batches`) and the model can be wrapped in ``torch.compile``. On the
CPU everything stays float32 without autocast, so a fixed seed gives identical metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from automl_transfer.data.batches import DeviceSplit, to_model_input
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.freezing import FrozenLayers
from automl_transfer.model.network import TransferModel
from automl_transfer.training.devices import release_memory
from automl_transfer.training.evaluation import autocast, evaluate_split
from automl_transfer.training.optim import (
    build_lr_schedule,
    build_optimizer,
    warmup_steps_for,
)
from automl_transfer.training.regularization import L2SP

#: On CUDA the loss is checked for NaN/inf every this many steps and at the end of each
#: epoch, so a diverging trial stops within this many steps without a host-device sync per
#: step. On the CPU, where the check is free, every step is checked.
CUDA_FINITE_CHECK_STEPS = 20

#: ``on_epoch(epoch, metrics)``: called after each epoch's validation; may raise ``optuna.TrialPruned``.
EpochCallback = Callable[[int, dict[str, float]], None]


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
    :param epochs: passes over the training split (at least 1).
    :param batch_size: images per optimiser step; the last incomplete batch of an epoch is
        dropped (a split smaller than one batch is used whole).
    :param label_smoothing: ``nn.CrossEntropyLoss``'s label smoothing for the training loss.
    :param augment: random resized crops and horizontal flips, drawn per image on the device.
    :param warmup_epochs: length of the linear warmup, at most half of the run.
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
    augment: bool
    warmup_epochs: float = 1.0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile: bool = False
    min_batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "min_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrialSettings.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class FitResult:
    """What a fit leaves behind.

    :param model: the trained model, on the training device, in eval mode, contiguous weights.
    :param metrics: the last epoch's metrics (see :func:`fit`).
    :param history: every epoch's metrics, in order.
    :param batch_size: the batch size the model was trained with.
    """

    model: TransferModel
    metrics: dict[str, float]
    history: list[dict[str, float]]
    batch_size: int


def fit(
    model: TransferModel,
    frozen: FrozenLayers,
    data: PreparedData,
    settings: TrialSettings,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fine-tune ``model`` on ``data.train``, validating on ``data.val`` after every epoch.

    :param model: the model; its backbone's frozen parameters already have
        ``requires_grad`` False. It is moved to ``settings.device`` and trained in place.
    :param frozen: the frozen layers; their norm layers stay in eval mode while training.
    :param data: the decoded dataset.
    :param settings: the trial's hyperparameters and device.
    :param on_epoch: called after each epoch with ``(epoch, metrics)``, ``epoch`` counting
        from 1 and ``metrics`` holding ``epoch``, ``train_loss`` (the mean label-smoothed
        training loss of the epoch, without the L2-SP term), ``val_loss`` (cross-entropy
        without smoothing), ``accuracy``, ``macro_f1`` and ``train_images`` (the images one
        epoch trains on). Whatever it raises
        (``optuna.TrialPruned``) stops the fit at once and propagates.
    :returns: the trained model (in eval mode, weights in contiguous format) and its metrics.
        When the fit raises, the model is left as the interrupted training left it.
    :raises NonFiniteLossError: the training loss became NaN or infinite (on CUDA within
        :data:`CUDA_FINITE_CHECK_STEPS` steps of it happening).
    :raises torch.OutOfMemoryError: CUDA ran out of memory (see :func:`fit_with_oom_retry`).
    """
    device = settings.device
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        torch.random.default_generator.manual_seed(settings.seed)
        for index in cuda_devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(settings.seed)
        history = _Trainer(model, frozen, data, settings).run(on_epoch)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    return FitResult(model=model, metrics=history[-1], history=history, batch_size=settings.batch_size)


def fit_with_oom_retry(
    model: TransferModel,
    frozen: FrozenLayers,
    data: PreparedData,
    settings: TrialSettings,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Run :func:`fit`, halving the batch size each time CUDA runs out of memory.

    Before the first attempt the model's weights and buffers are copied to host memory; after
    an out-of-memory error the GPU memory the attempt held is released (garbage collection,
    ``torch.cuda.empty_cache``), the copy is loaded back so that the partial fit is undone,
    and the fit starts again from scratch with half the batch size, never below
    ``settings.min_batch_size``. The learning rate is kept. Epochs that an earlier attempt
    already passed to ``on_epoch`` are not passed again, so a pruner never sees an epoch twice.

    :param model: the model to train (frozen layers already frozen).
    :param frozen: the frozen layers, as for :func:`fit`.
    :param data: the decoded dataset.
    :param settings: as for :func:`fit`; ``batch_size`` is the first size tried.
    :param on_epoch: as for :func:`fit`.
    :returns: the result of the first attempt that fitted; its ``batch_size`` says which.
    :raises OutOfMemoryTrialError: even ``settings.min_batch_size`` ran out of memory.
    :raises NonFiniteLossError: as for :func:`fit`.
    """
    initial_state = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
    reported_epochs = 0

    def report_new_epochs(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal reported_epochs
        if epoch > reported_epochs:
            reported_epochs = epoch
            if on_epoch is not None:
                on_epoch(epoch, metrics)

    batch_size = settings.batch_size
    tried: list[int] = []
    while True:
        tried.append(batch_size)
        try:
            return fit(model, frozen, data, dataclasses.replace(settings, batch_size=batch_size), report_new_epochs)
        except torch.OutOfMemoryError:
            pass  # leave the handler first: its traceback keeps the failed attempt's tensors alive
        release_memory(settings.device)
        if batch_size <= settings.min_batch_size:
            raise OutOfMemoryTrialError(
                f"out of {settings.device} memory at batch sizes {', '.join(map(str, tried))}; "
                "search smaller backbones or image sizes, or free the GPU of other work"
            )
        batch_size = max(settings.min_batch_size, batch_size // 2)
        model.load_state_dict(initial_state)


class _Trainer:
    """The state of one fit: data on the device, optimiser, schedule, generators."""

    def __init__(self, model: TransferModel, frozen: FrozenLayers, data: PreparedData, settings: TrialSettings):
        self.model = model
        self.frozen = frozen
        self.settings = settings
        self.device = settings.device
        self.cuda = self.device.type == "cuda"
        model.to(self.device)
        if self.cuda:
            model.to(memory_format=torch.channels_last)
        self.train_split = DeviceSplit(data.train, self.device)
        self.val_split = DeviceSplit(data.val, self.device)
        self.batch_size = min(settings.batch_size, len(self.train_split))
        self.steps_per_epoch = max(1, len(self.train_split) // settings.batch_size)
        total_steps = self.steps_per_epoch * settings.epochs

        self.l2sp = L2SP(model.backbone.parameters(), settings.l2sp)
        decayed, undecayed = _decay_groups(model, skip_decay={id(parameter) for parameter in self.l2sp.parameters})
        self.optimizer = build_optimizer(decayed, undecayed, settings.lr, settings.weight_decay, self.device)
        warmup_steps = warmup_steps_for(settings.warmup_epochs, self.steps_per_epoch, total_steps)
        self.schedule = build_lr_schedule(self.optimizer, total_steps, warmup_steps)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.network: nn.Module = torch.compile(model) if settings.compile and self.cuda else model

        self.order_generator = torch.Generator(device=self.train_split.storage_device)
        self.order_generator.manual_seed(settings.seed)
        self.augment_generator = None
        if settings.augment:
            self.augment_generator = torch.Generator(device=self.device)
            self.augment_generator.manual_seed(settings.seed + 1)

    def run(self, on_epoch: EpochCallback | None) -> list[dict[str, float]]:
        """Train every epoch, validating after each; return the metrics of all epochs."""
        history = []
        for epoch in range(1, self.settings.epochs + 1):
            train_loss = self.train_epoch(epoch)
            self.model.eval()
            scores = evaluate_split(
                self.network, self.val_split, self.batch_size, self.device, channels_last=self.cuda
            )
            metrics = {"epoch": epoch, "train_loss": train_loss, **scores, "train_images": len(self.train_split)}
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
        return history

    def train_epoch(self, epoch: int) -> float:
        """Run one pass over the shuffled training split; return its mean training loss."""
        self.model.train()
        self.frozen.keep_frozen_in_eval(self.model)
        order = self.train_split.permutation(self.order_generator)
        loss_sum = torch.zeros((), device=self.device)
        check_every = CUDA_FINITE_CHECK_STEPS if self.cuda else 1
        for step in range(self.steps_per_epoch):
            images, labels = self.train_split.take(order[step * self.batch_size : (step + 1) * self.batch_size])
            inputs = to_model_input(images, channels_last=self.cuda, augment_with=self.augment_generator)
            with autocast(self.device):
                loss = self.criterion(self.network(inputs), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.l2sp.add_gradient()
            self.optimizer.step()
            self.schedule.step()
            loss_sum += loss.detach()
            if (step + 1) % check_every == 0:
                self._check_finite(loss_sum, epoch, step + 1)
        self._check_finite(loss_sum, epoch, self.steps_per_epoch)
        return float(loss_sum) / self.steps_per_epoch

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, step: int) -> None:
        """Raise :class:`NonFiniteLossError` when any loss summed so far this epoch was NaN or infinite."""
        if not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLossError(
                f"the training loss became {float(loss_sum)} by step {step} of epoch {epoch} "
                f"(lr {self.settings.lr:g}); a lower learning rate usually avoids this"
            )


def _decay_groups(model: nn.Module, skip_decay: set[int]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split ``model``'s trainable parameters into those weight decay applies to and the rest.

    Parameters with at most one dimension (norm scales, biases) and those whose ``id`` is in
    ``skip_decay`` are not decayed; frozen parameters are left out entirely.
    """
    decayed, undecayed = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or id(parameter) in skip_decay:
            undecayed.append(parameter)
        else:
            decayed.append(parameter)
    return decayed, undecayed
