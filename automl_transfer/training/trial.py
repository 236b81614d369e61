"""One trial: build the model its parameters describe, fine-tune it, report every epoch.

The runner knows nothing of studies or run directories. It receives resolved parameters
(:class:`~automl_transfer.training.params.TrialParams`) and a per-epoch callback, and returns
the trained model with everything needed to save and reload it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from automl_transfer.contract.components import Backbone
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.model.sources import SourceSpec, build_backbone
from automl_transfer.registry import get_component
from automl_transfer.training.fit import TrialSettings, fit_with_oom_retry
from automl_transfer.training.params import TrialParams


@dataclass
class TrainedModel:
    """What a finished trial leaves behind.

    :param model: the fine-tuned network, on the training device, in eval mode.
    :param backbone: the backbone description it was built from.
    :param params: the parameters it was trained with.
    :param metrics: the validation metrics of its best epoch, whose weights it holds.
    :param batch_size: the batch size it really trained with (halved after out-of-memory).
    :param best_epoch: the epoch whose weights it holds, counting from 1.
    """

    model: TransferModel
    backbone: Backbone
    params: TrialParams
    metrics: dict[str, float]
    batch_size: int
    best_epoch: int


def run_trial(
    params: TrialParams,
    prepare: Callable[[int, str], PreparedData],
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None],
    compile_model: bool = False,
    seed: int = 0,
    monitor: str = "accuracy",
) -> TrainedModel:
    """Fine-tune the model ``params`` describes and return it.

    :param params: the trial's resolved parameters.
    :param prepare: ``prepare(image_size, interpolation)`` returns the decoded dataset at
        that size (the caller caches it across trials).
    :param device: where to train.
    :param on_epoch: called with ``(epoch, metrics)`` after each validation; it may raise
        ``optuna.TrialPruned`` to stop the trial.
    :param compile_model: wrap the model in ``torch.compile`` on CUDA.
    :param seed: seeds random initialisation (backbone for ``@none``, head), shuffling and augmentation.
    :param monitor: the validation metric that picks the best epoch (``accuracy``,
        ``macro_f1`` or ``val_loss``).
    :returns: the trained model with its best epoch's weights and metrics.
    :raises automl_transfer.training.fit.NonFiniteLossError: the loss became NaN or infinite.
    :raises automl_transfer.training.fit.OutOfMemoryTrialError: even the smallest batch did not fit.
    """
    torch.manual_seed(seed)
    backbone = build_backbone(SourceSpec.parse(params.source))
    data = prepare(params.image_size, params.interpolation)
    head = get_component("head", params.head).build(backbone.num_features, len(data.class_names), **params.head_params)
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    frozen = freeze_backbone(backbone, params.freeze_depth)
    settings = TrialSettings(
        lr=params.lr,
        weight_decay=params.weight_decay,
        l2sp=params.l2sp,
        epochs=params.epochs,
        batch_size=params.batch_size,
        label_smoothing=params.label_smoothing,
        augment=params.augment,
        warmup_epochs=params.warmup_epochs,
        l1=params.l1,
        min_steps=params.min_steps,
        patience=params.patience,
        monitor=monitor,
        device=device,
        compile=compile_model,
        seed=seed,
    )
    result = fit_with_oom_retry(model, frozen, data, settings, on_epoch)
    return TrainedModel(
        model=result.model,
        backbone=backbone,
        params=params,
        metrics=result.metrics,
        batch_size=result.batch_size,
        best_epoch=result.best_epoch,
    )
