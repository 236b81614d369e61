"""Fine-tune one trial's model, scoring it on the validation split every epoch.

:func:`fit` trains a :class:`TransferModel` whose first backbone groups are frozen:
AdamW (no weight decay on norm scales, biases and other 1-d parameters; frozen parameters
get no optimiser state), a per-step linear warmup and cosine decay, label smoothing, and the
regularizers and batch transforms plugins registered (L2-SP, L1, DELTA, BSS, mixup, cutmix
built in; :mod:`automl_transfer.training.extensions`); early stopping keeps the best
epoch's weights (see :mod:`automl_transfer.training.trainer`). :func:`fit_with_oom_retry`
halves the batch size when CUDA runs out of memory.

The same code runs on CPU and CUDA. On CUDA the forward pass runs under bf16 autocast with
channels-last tensors, data is uploaded to the GPU once per fit (see
:mod:`automl_transfer.data.batches`) and the model can be wrapped in ``torch.compile``. On the
CPU everything stays float32 without autocast, so a fixed seed gives identical metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from automl_transfer.data.cache import FeatureStore
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.freezing import FrozenLayers
from automl_transfer.model.network import TransferModel
from automl_transfer.training.devices import release_memory
from automl_transfer.training.failures import OutOfMemoryTrialError
from automl_transfer.training.settings import TrialSettings
from automl_transfer.training.trainer import EpochCallback, Trainer

__all__ = ["FitResult", "TrialSettings", "fit", "fit_with_oom_retry"]


@dataclass
class FitResult:
    """What a fit leaves behind.

    :param model: the trained model with its best epoch's weights, on the training device,
        in eval mode, contiguous weights.
    :param metrics: the best epoch's metrics (see :func:`fit`); without a validation split,
        the last epoch's.
    :param history: every epoch's metrics, in order.
    :param batch_size: the batch size the model was trained with.
    :param best_epoch: the epoch whose weights the model holds, counting from 1.
    :param frozen_reuse: how the frozen layers' output was reused, or why it was not
        (:attr:`Trainer.frozen_reuse <automl_transfer.training.trainer.Trainer.frozen_reuse>`).
    """

    model: TransferModel
    metrics: dict[str, float]
    history: list[dict[str, float]]
    batch_size: int
    best_epoch: int
    frozen_reuse: str = ""


def fit(
    model: TransferModel,
    frozen: FrozenLayers,
    data: PreparedData,
    settings: TrialSettings,
    on_epoch: EpochCallback | None = None,
    feature_store: FeatureStore | None = None,
) -> FitResult:
    """Fine-tune ``model`` on ``data.train``, validating on ``data.val`` after every epoch, and keep its best epoch.

    :param model: the model; its backbone's frozen parameters already have
        ``requires_grad`` False. It is moved to ``settings.device`` and trained in place.
    :param frozen: the frozen layers; their norm layers stay in eval mode while training.
    :param data: the decoded dataset.
    :param settings: the trial's hyperparameters and device.
    :param on_epoch: called after each epoch with ``(epoch, metrics)``, ``epoch`` counting
        from 1 and ``metrics`` holding ``epoch``, ``train_loss`` (the mean label-smoothed
        training loss of the epoch, without any regularizer's term), ``val_loss`` (cross-entropy
        without smoothing), ``accuracy``, ``macro_f1`` and ``train_images`` (the images one
        epoch trains on). Whatever it raises (``optuna.TrialPruned``) stops the fit at once
        and propagates.
    :param feature_store: where a wholly frozen backbone's features are kept between fits.
    :returns: the trained model with its best epoch's weights (in eval mode, weights in
        contiguous format), that epoch's metrics and the history.
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
        trainer = Trainer(model, frozen, data, settings, feature_store)
        history = trainer.run(on_epoch)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    best = trainer.best.epoch
    return FitResult(
        model=model,
        metrics=history[best - 1],
        history=history,
        batch_size=settings.batch_size,
        best_epoch=best,
        frozen_reuse=trainer.frozen_reuse,
    )


def fit_with_oom_retry(
    model: TransferModel,
    frozen: FrozenLayers,
    data: PreparedData,
    settings: TrialSettings,
    on_epoch: EpochCallback | None = None,
    feature_store: FeatureStore | None = None,
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
    :param feature_store: as for :func:`fit`.
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
            attempt = dataclasses.replace(settings, batch_size=batch_size)
            return fit(model, frozen, data, attempt, report_new_epochs, feature_store)
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
