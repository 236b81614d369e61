"""The state of one fit and its epochs: batches, passes, regularisers, the best epoch.

:class:`Trainer` is what :func:`automl_transfer.training.fit.fit` runs. An epoch makes
``passes`` shuffled passes over the training split, each cut into ``ceil(n / batch_size)``
near-equal batches (no image is dropped; a small split makes several passes so that the fit
takes about ``min_steps`` steps: the whole number of passes that comes closest, at least one). After every epoch it validates, remembers the best epoch's
weights and stops when ``patience`` epochs in a row bring no improvement; the weights of the
best epoch are restored when it ends.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from automl_transfer.data.augmentations import AUGMENTATIONS
from automl_transfer.data.batches import DeviceSplit, to_model_input
from automl_transfer.data.cache import FeatureStore
from automl_transfer.data.prepare import LabelledTensors, PreparedData
from automl_transfer.model.freezing import FrozenLayers
from automl_transfer.model.network import TransferModel
from automl_transfer.training.evaluation import autocast, evaluate_split
from automl_transfer.training.extensions import TrainingExtensions
from automl_transfer.training.failures import NonFiniteLossError
from automl_transfer.training.frozen_prefix import front_outputs, split_frozen_prefix
from automl_transfer.training.optim import (
    build_lr_schedule,
    build_optimizer,
    warmup_steps_for,
)
from automl_transfer.training.settings import MONITORED, TrialSettings

#: On CUDA the loss is checked for NaN/inf every this many steps and at the end of each
#: epoch, so a diverging trial stops within this many steps without a host-device sync per
#: step. On the CPU, where the check is free, every step is checked.
CUDA_FINITE_CHECK_STEPS = 20

#: ``on_epoch(epoch, metrics)``: called after each epoch's validation; may raise ``optuna.TrialPruned``.
EpochCallback = Callable[[int, dict[str, float]], None]


#: Validation runs in batches this many times the training batch (no activations are kept).
EVAL_BATCH_FACTOR = 4


class Trainer:
    """The state of one fit: data on the device, optimiser, schedule, generators, the best epoch.

    :param model: the model, frozen parameters already frozen; moved to the device.
    :param frozen: the frozen layers (their norm layers stay in eval mode).
    :param data: the decoded dataset; without a validation split (``data.val`` ``None``) no
        epoch is validated and the last one is kept (a refit on every labelled image).
    :param settings: the trial's hyperparameters and device.
    :param feature_store: where the pooled features of a wholly frozen backbone are kept
        between fits (``None``: computed for this fit only).

    :ivar frozen_reuse: how the frozen layers' output was reused, or why it was not.
    """

    def __init__(
        self,
        model: TransferModel,
        frozen: FrozenLayers,
        data: PreparedData,
        settings: TrialSettings,
        feature_store: FeatureStore | None = None,
    ):
        self.model = model
        self.frozen = frozen
        self.settings = settings
        self.device = settings.device
        self.cuda = self.device.type == "cuda"
        model.to(self.device)
        if self.cuda:
            model.to(memory_format=torch.channels_last)
        self.train_split = DeviceSplit(data.train, self.device)
        self.val_split = DeviceSplit(data.val, self.device) if data.val is not None else None
        self.augmentation = AUGMENTATIONS[settings.augment]
        self.network: nn.Module = model
        self.extensions = TrainingExtensions.build(
            model, settings, [list(group) for group in frozen.param_groups], frozen.n_frozen_groups, len(data.class_names)
        )
        try:
            self._set_up(data, feature_store)
        except BaseException:
            self.extensions.close()
            raise

    def _set_up(self, data: PreparedData, feature_store: FeatureStore | None) -> None:
        """Reuse the frozen front when possible, then make the optimiser, schedule, loss and generators."""
        settings, model = self.settings, self.model
        self.frozen_reuse = self._reuse_frozen_front(data, feature_store)
        self.steps_per_pass = max(1, math.ceil(len(self.train_split) / settings.batch_size))
        # The passes closest to min_steps: a split that nearly reaches it in its epochs is not trained twice.
        self.passes = max(1, round(settings.min_steps / (self.steps_per_pass * settings.epochs)))
        self.steps_per_epoch = self.steps_per_pass * self.passes
        self.eval_batch_size = EVAL_BATCH_FACTOR * settings.batch_size
        total_steps = self.steps_per_epoch * settings.epochs

        decayed, undecayed = _decay_groups(model, skip_decay=self.extensions.undecayed)
        self.optimizer = build_optimizer(decayed, undecayed, settings.lr, settings.weight_decay, self.device)
        warmup_steps = warmup_steps_for(settings.warmup_epochs, self.steps_per_epoch, total_steps)
        self.schedule = build_lr_schedule(self.optimizer, total_steps, warmup_steps)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        if settings.compile and self.cuda:
            self.network = torch.compile(self.network)

        self.order_generator = torch.Generator(device=self.train_split.storage_device)
        self.order_generator.manual_seed(settings.seed)
        self.augment_generator = None
        if self.augmentation is not None:
            self.augment_generator = torch.Generator(device=self.device)
            self.augment_generator.manual_seed(settings.seed + 1)
        self.best = BestEpoch(settings.monitor, settings.patience)

    def run(self, on_epoch: EpochCallback | None) -> list[dict[str, float]]:
        """Train epoch after epoch, validating after each, until the last or an early stop.

        The model ends with the weights of its best epoch (:attr:`best`); the regularizers and
        batch transforms are closed (their hooks removed) however the fit ends.

        :returns: the metrics of every epoch trained.
        """
        try:
            return self._epochs(on_epoch)
        finally:
            self.extensions.close()

    def _epochs(self, on_epoch: EpochCallback | None) -> list[dict[str, float]]:
        """The epochs of :meth:`run`: train, validate, report, stop early; return every epoch's metrics."""
        history = []
        for epoch in range(1, self.settings.epochs + 1):
            metrics = {"epoch": epoch, "train_loss": self.train_epoch(epoch)}
            metrics["train_images"] = len(self.train_split) * self.passes
            if self.val_split is not None:
                self.model.eval()
                metrics.update(
                    evaluate_split(self.network, self.val_split, self.eval_batch_size, self.device, channels_last=self.cuda)
                )
            history.append(metrics)
            self.best.update(epoch, metrics, self.model)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if self.best.should_stop(epoch):
                break
        self.best.restore(self.model)
        return history

    def train_epoch(self, epoch: int) -> float:
        """Make this epoch's passes over the shuffled training split; return the mean training loss."""
        self.model.train()
        self.frozen.keep_frozen_in_eval(self.model)
        loss_sum = torch.zeros((), device=self.device)
        check_every = CUDA_FINITE_CHECK_STEPS if self.cuda else 1
        for step, rows in enumerate(self._batches(), start=1):
            images, labels = self.train_split.take(rows)
            inputs = to_model_input(
                images, channels_last=self.cuda, augmentation=self.augmentation, generator=self.augment_generator
            )
            inputs, targets = self.extensions.transform(inputs, labels)
            with autocast(self.device):
                logits = self.network(inputs)
                loss = self.criterion(logits, targets)
                penalty = self.extensions.loss(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty).backward()
            self.extensions.add_gradients()
            self.optimizer.step()
            self.schedule.step()
            loss_sum += loss.detach()
            if step % check_every == 0:
                self._check_finite(loss_sum, epoch, step)
        self._check_finite(loss_sum, epoch, self.steps_per_epoch)
        return float(loss_sum) / self.steps_per_epoch

    def _reuse_frozen_front(self, data: PreparedData, feature_store: FeatureStore | None) -> str:
        """Compute the frozen front's output once and train the rest on it, when that is exact and fits.

        Without augmentation the frozen layers see the same images every epoch and, in eval
        mode, compute the same tensors (:mod:`automl_transfer.training.frozen_prefix`); their
        output for both splits is computed here, kept where the images were (in memory while
        it takes at most :data:`~automl_transfer.data.batches.RESIDENT_SHARE` of what is
        free) and the network becomes the rest of the model.

        :returns: what was done, for the trial's record: ``features (cached)``, ``frozen
            front computed once`` or ``not reused: <reason>``.
        """
        if not self.settings.reuse_frozen:
            return "not reused: switched off"
        if self.augmentation is not None:
            return "not reused: augmented images differ every epoch"
        blocker = self.extensions.reuse_blocker()
        if blocker is not None:
            return f"not reused: {blocker}"
        self.model.train()
        self.frozen.keep_frozen_in_eval(self.model)
        prefix, reason = split_frozen_prefix(self.model)
        if prefix is None:
            return f"not reused: {reason}"
        stored = feature_store is not None and prefix.whole_backbone
        outputs = feature_store.read() if stored else None
        if outputs is None:
            outputs = {}
            for name, split in (("train", self.train_split), ("val", self.val_split)):
                if split is not None:
                    computed = front_outputs(prefix.front, split, EVAL_BATCH_FACTOR * self.settings.batch_size, self.device)
                    if computed is None:
                        return "not reused: its output would not fit in memory"
                    outputs[name] = computed
            if stored:
                feature_store.write(outputs)
        self.train_split = DeviceSplit(LabelledTensors(outputs["train"], data.train.labels), self.device)
        if self.val_split is not None:
            self.val_split = DeviceSplit(LabelledTensors(outputs["val"], data.val.labels), self.device)
        self.network = prefix.rest
        return "features (cached)" if stored else "frozen front computed once"

    def _batches(self):
        """Yield the rows of every step of one epoch: ``passes`` shuffles, each cut into near-equal batches."""
        for _ in range(self.passes):
            order = self.train_split.permutation(self.order_generator)
            yield from torch.tensor_split(order, self.steps_per_pass)

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, step: int) -> None:
        """Raise :class:`NonFiniteLossError` when any loss summed so far this epoch was NaN or infinite."""
        if not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLossError(
                f"the training loss became {float(loss_sum)} by step {step} of epoch {epoch} "
                f"(lr {self.settings.lr:g}); a lower learning rate usually avoids this"
            )


class BestEpoch:
    """The best epoch of a fit so far, its weights, and whether to stop early.

    :param monitor: the metric that ranks epochs (a key of :data:`MONITORED`).
    :param patience: epochs in a row without improvement after which to stop (0: never).
    """

    def __init__(self, monitor: str, patience: int):
        self.monitor = monitor
        self.higher_is_better = MONITORED[monitor]
        self.patience = patience
        self.epoch = 0
        self._key: tuple[float, float] | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        """Take ``epoch`` as the best when its metrics beat the best so far, keeping a copy of the weights.

        Without validation metrics every epoch is taken (the last one is kept).
        """
        if self.monitor not in metrics:
            self.epoch = epoch
            return
        value = metrics[self.monitor]
        key = (value if self.higher_is_better else -value, -metrics.get("val_loss", 0.0))
        if self._key is None or key > self._key:
            self._key, self.epoch = key, epoch
            self._state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    def should_stop(self, epoch: int) -> bool:
        """Whether ``patience`` epochs in a row have passed without a better one."""
        return bool(self.patience) and epoch - self.epoch >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights into ``model`` (nothing to do when the last epoch was the best)."""
        if self._state is not None:
            model.load_state_dict(self._state)
            self._state = None


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
