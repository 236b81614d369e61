"""One trial: build the model its parameters describe, fine-tune it, report every epoch.

The runner knows nothing of studies or run directories. It receives resolved parameters
(:class:`~automl_transfer.training.params.TrialParams`) and a per-epoch callback, and returns
the trained model with everything needed to save and reload it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from automl_transfer.contract.components import NO_WEIGHTS, Backbone
from automl_transfer.data.cache import FeatureStore
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import build_backbone
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
    :param frozen_reuse: how its frozen layers' output was reused, or why it was not.
    """

    model: TransferModel
    backbone: Backbone
    params: TrialParams
    metrics: dict[str, float]
    batch_size: int
    best_epoch: int
    frozen_reuse: str = ""


def run_trial(
    params: TrialParams,
    prepare: Callable[[int, str], PreparedData],
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None],
    compile_model: bool = False,
    seed: int = 0,
    monitor: str = "accuracy",
    cache_dir: Path | None = None,
    build: Callable[[str], Backbone] = build_backbone,
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
    :param cache_dir: the run dir's cache: a trial that freezes its whole pretrained backbone
        keeps the backbone's features there for every later trial of the same source.
    :param build: builds the source's backbone (a search passes its
        :class:`~automl_transfer.model.sources.BackboneCache`).
    :returns: the trained model with its best epoch's weights and metrics.
    :raises automl_transfer.training.fit.NonFiniteLossError: the loss became NaN or infinite.
    :raises automl_transfer.training.fit.OutOfMemoryTrialError: even the smallest batch did not fit.
    """
    torch.manual_seed(seed)
    backbone = build(params.source)
    data = prepare(params.image_size, params.interpolation)
    head = get_component("head", params.head).build(backbone.num_features, len(data.class_names), **params.head_params)
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    frozen = freeze_backbone(backbone, params.freeze_depth)
    settings = TrialSettings(
        **params.training_values(), monitor=monitor, device=device, compile=compile_model, seed=seed
    )
    result = fit_with_oom_retry(model, frozen, data, settings, on_epoch, feature_store(params, data, cache_dir))
    return TrainedModel(
        model=result.model,
        backbone=backbone,
        params=params,
        metrics=result.metrics,
        batch_size=result.batch_size,
        best_epoch=result.best_epoch,
        frozen_reuse=result.frozen_reuse,
    )


def feature_store(params: TrialParams, data: PreparedData, cache_dir: Path | None) -> FeatureStore | None:
    """The store of the features a trial of ``params`` trains its head on, or ``None`` when it does not.

    Only a trial that freezes its whole backbone trains on stored features
    (:func:`source_feature_store`).
    """
    return source_feature_store(params.source, data, cache_dir) if params.freeze_depth >= 1.0 else None


def source_feature_store(source: str, data: PreparedData, cache_dir: Path | None) -> FeatureStore | None:
    """The store of the pooled features ``source``'s backbone gives ``data``, or ``None`` when they are not kept.

    Features are kept for a backbone with fixed weights (pretrained or a file; random weights
    differ from trial to trial), on data with a key: trials and the ranking of sources share them.
    """
    spec = SourceSpec.parse(source)
    if cache_dir is None or not data.key or spec.weights == NO_WEIGHTS:
        return None
    weights = spec.weights_file
    identity = [str(weights), *_file_stamp(weights)] if weights is not None else str(spec)
    return FeatureStore(cache_dir, {"data": data.key, "source": str(spec), "weights": identity})


def _file_stamp(path: Path) -> tuple[int, int]:
    """A file's size and modification time: a rewritten weights file gets new features."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
