"""Ranking a space's sources by how well their frozen features suit the task.

For every source with fixed weights, its backbone's pooled features of the training and
validation images are computed once (in eval mode) and kept in the run dir's cache, where the
search's feature-extraction trials find them again. Two estimators score the features of every
labelled image (training and validation together: nothing is trained, so nothing can overfit
them, and a few-shot task needs every image for a stable score): LogME
(:mod:`automl_transfer.ranking.logme`) and the leave-one-out accuracy of a 5-nearest-neighbour
classifier (:mod:`automl_transfer.ranking.knn`). Sources are ranked by the mean of their two
ranks (ties go to the better kNN accuracy). A source with random weights (``@none``) has no
meaningful transferability score: it is ranked after every pretrained one, without scores.
A search orders its start points by the ranking only when the two estimators agree on every
pair of sources (:func:`agreed_order`); otherwise it keeps the space's order.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from automl_transfer.contract.components import Backbone
from automl_transfer.data.batches import DeviceSplit
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.source_spec import random_weights
from automl_transfer.ranking.knn import knn_accuracy
from automl_transfer.ranking.logme import logme
from automl_transfer.training.frozen_prefix import FeatureExtractor, front_outputs
from automl_transfer.training.params import preprocessing_for
from automl_transfer.training.trial import source_feature_store

#: Images per forward pass while features are computed.
FEATURE_BATCH = 256
#: Neighbours of the kNN estimator.
NEIGHBOURS = 5


@dataclass
class SourceScore:
    """How one source ranks: its estimators' scores and its place.

    :param source: the source text.
    :param logme: its LogME evidence (higher is better), ``None`` for random weights.
    :param knn_accuracy: its kNN validation accuracy, ``None`` for random weights.
    :param rank: its place, 1 for the most promising.
    :param seconds: what scoring it took (features included, unless they came from the cache).
    """

    source: str
    logme: float | None
    knn_accuracy: float | None
    rank: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the score as ``rank --json`` prints it and the study records it."""
        return asdict(self)


def rank_sources(
    sources: list[str],
    image_size: int | None,
    prepare: Callable[[int, str], PreparedData],
    build: Callable[[str], Backbone],
    device: torch.device,
    cache_dir: Path | None = None,
    on_source: Callable[[int, int], None] | None = None,
) -> list[SourceScore]:
    """Score every source on the task and rank them (see the module docstring).

    :param sources: the space's sources.
    :param image_size: the size the space fixes, or ``None`` for each source's own.
    :param prepare: ``prepare(image_size, interpolation)`` returns the decoded dataset.
    :param build: builds a source's backbone.
    :param device: where the features are computed.
    :param cache_dir: the run dir's cache, where features are kept for the trials.
    :param on_source: called with ``(sources done, sources in all)`` as the work goes on.
    :returns: one score per source, best first.
    """
    scored: list[tuple[str, float | None, float | None, float]] = []
    for number, source in enumerate(dict.fromkeys(sources)):
        if on_source is not None:
            on_source(number, len(sources))
        if random_weights(source):
            scored.append((source, None, None, 0.0))
            continue
        start = time.perf_counter()
        backbone = build(source)
        data = prepare(*preprocessing_for(image_size, backbone.data_config))
        features = source_features(backbone, data, device, source_feature_store(source, data, cache_dir))
        evidence, accuracy = estimate(features, data)
        scored.append((source, evidence, accuracy, time.perf_counter() - start))
    if on_source is not None:
        on_source(len(sources), len(sources))
    return _ranked(scored)


def estimate(features: dict[str, torch.Tensor], data: PreparedData) -> tuple[float, float]:
    """Return ``(LogME, kNN leave-one-out accuracy)`` of the features of every labelled image.

    :param features: the pooled features of ``data``'s ``train`` and ``val`` images, in order.
    """
    every = np.concatenate([features[name].float().cpu().numpy() for name in ("train", "val")])
    labels = np.concatenate([data.train.labels.numpy(), data.val.labels.numpy()])
    return logme(every, labels), knn_accuracy(every, labels, k=NEIGHBOURS)


def source_features(backbone: Backbone, data: PreparedData, device: torch.device, store: Any = None) -> dict[str, torch.Tensor]:
    """Return the pooled features of the training and validation images, from ``store`` when it has them.

    :param store: a :class:`~automl_transfer.data.cache.FeatureStore` to read and fill, or ``None``.
    :raises MemoryError: the features would not fit in memory.
    """
    stored = store.read() if store is not None else None
    if stored is not None:
        return stored
    extractor = FeatureExtractor(backbone.module, backbone.data_config["mean"], backbone.data_config["std"])
    extractor.to(device).eval()
    features = {}
    for name in ("train", "val"):
        computed = front_outputs(extractor, DeviceSplit(getattr(data, name), device), FEATURE_BATCH, device)
        if computed is None:
            raise MemoryError(f"the {name} features of {backbone.architecture} would not fit in memory")
        features[name] = computed
    if store is not None:
        store.write(features)
    return features


def _ranked(scored: list[tuple[str, float | None, float | None, float]]) -> list[SourceScore]:
    """Rank pretrained sources by the mean of their two ranks, then random-weight sources."""
    pretrained = [entry for entry in scored if entry[1] is not None]
    by_logme = _places([entry[1] for entry in pretrained])
    by_knn = _places([entry[2] for entry in pretrained])
    order = sorted(range(len(pretrained)), key=lambda i: ((by_logme[i] + by_knn[i]) / 2, -pretrained[i][2], -pretrained[i][1]))
    ranked = [pretrained[i] for i in order] + [entry for entry in scored if entry[1] is None]
    return [
        SourceScore(source, evidence, accuracy, rank, round(seconds, 3))
        for rank, (source, evidence, accuracy, seconds) in enumerate(ranked, start=1)
    ]


def agreed_order(scores: list[SourceScore]) -> list[str] | None:
    """Return the ranked sources when the two estimators never contradict each other, else ``None``.

    Two pretrained sources contradict when LogME puts one strictly above the other and the kNN
    accuracy strictly the other way round: the ranking then rests on how two incomparable scales
    were averaged, not on evidence, and a search must not reorder its start points by it. Ties
    contradict nothing; random-weight sources (no scores) take no part.

    :param scores: :func:`rank_sources`' result.
    :returns: the sources in ranked order, or ``None`` when some pair is contradicted.
    """
    scored = [score for score in scores if score.logme is not None and score.knn_accuracy is not None]
    for index, first in enumerate(scored):
        for second in scored[index + 1 :]:
            if (first.logme - second.logme) * (first.knn_accuracy - second.knn_accuracy) < 0:
                return None
    return [score.source for score in scores]


def _places(values: list[float]) -> list[float]:
    """The place of each value, 1 for the highest, ties sharing their mean place."""
    array = np.asarray(values, dtype=float)
    places = np.empty(len(array))
    for value in np.unique(array):
        where = np.flatnonzero(array == value)
        higher = int(np.count_nonzero(array > value))
        places[where] = higher + (len(where) + 1) / 2
    return places.tolist()
