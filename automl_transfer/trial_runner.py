"""One trial: build the model a parameter set describes, fine-tune it, report every epoch.

The runner knows nothing of studies or run directories. It receives concrete parameters
(from :meth:`automl_transfer.space.SearchSpace.suggest`) and a per-epoch callback, and
returns the trained model with everything needed to save and reload it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from automl_transfer.components import Backbone
from automl_transfer.datasets import PreparedData
from automl_transfer.freezing import freeze_backbone
from automl_transfer.model import TransferModel
from automl_transfer.plugins import get_component
from automl_transfer.sources import SourceSpec, build_backbone
from automl_transfer.training import TrialSettings, fit_with_oom_retry

#: The objective each ``--metric`` reads from an epoch's metrics, and its direction.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "maximize"),
    "macro_f1": ("macro_f1", "maximize"),
    "loss": ("val_loss", "minimize"),
}


@dataclass
class TrainedModel:
    """What a finished trial leaves behind.

    :param model: the fine-tuned network, on the training device, in eval mode.
    :param backbone: the backbone description it was built from.
    :param metrics: the final epoch's validation metrics.
    :param image_size: the side of the square images the model was trained on.
    :param batch_size: the batch size that fitted in memory (halved after out-of-memory).
    """

    model: TransferModel
    backbone: Backbone
    metrics: dict[str, float]
    image_size: int
    batch_size: int


def run_trial(
    params: dict[str, Any],
    prepare: Callable[[int, str], PreparedData],
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None],
    compile_model: bool = False,
    seed: int = 0,
) -> TrainedModel:
    """Fine-tune the model ``params`` describes and return it.

    :param params: concrete trial parameters: ``source``, ``head``, ``head_params``,
        ``freeze_depth``, ``lr``, ``weight_decay``, ``l2sp``, ``epochs``, ``batch_size``,
        ``label_smoothing``, ``augment`` and optionally ``image_size``.
    :param prepare: ``prepare(image_size, interpolation)`` returns the decoded dataset at
        that size (the caller caches it across trials).
    :param device: where to train.
    :param on_epoch: called with ``(epoch, metrics)`` after each validation; it may raise
        ``optuna.TrialPruned`` to stop the trial.
    :param compile_model: wrap the model in ``torch.compile`` on CUDA.
    :param seed: seeds random initialisation (backbone for ``@none``, head), shuffling and augmentation.
    :returns: the trained model and its final metrics.
    :raises automl_transfer.training.NonFiniteLossError: the loss became NaN or infinite.
    :raises automl_transfer.training.OutOfMemoryTrialError: even the smallest batch did not fit.
    """
    torch.manual_seed(seed)
    backbone = build_backbone(SourceSpec.parse(params["source"]))
    image_size = int(params.get("image_size") or backbone.data_config["input_size"][-1])
    data = prepare(image_size, backbone.data_config.get("interpolation", "bilinear"))
    head_component = get_component("head", params["head"])

    head = head_component.build(backbone.num_features, len(data.class_names), **params.get("head_params", {}))
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    frozen = freeze_backbone(backbone, params["freeze_depth"])
    settings = TrialSettings(
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        l2sp=params["l2sp"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        label_smoothing=params["label_smoothing"],
        augment=params["augment"],
        warmup_epochs=params["warmup_epochs"],
        device=device,
        compile=compile_model,
        seed=seed,
    )
    result = fit_with_oom_retry(model, frozen, data, settings, on_epoch)
    return TrainedModel(
        model=result.model,
        backbone=backbone,
        metrics=result.metrics,
        image_size=image_size,
        batch_size=result.batch_size,
    )
