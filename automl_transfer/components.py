"""The objects plugins hand to the core: backbones, heads and datasets.

These types are the contract between plugins and the core. A backbone builder returns a
:class:`Backbone`; a dataset loader returns an :class:`ImageDataset`. The registries store
one :class:`Component` per registered name, remembering which plugin provided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from PIL import Image
from torch import nn

#: One image of a dataset: a file path, or an image already in memory.
ImageItem = Union[Path, Image.Image]


@dataclass
class Backbone:
    """A feature extractor ready for transfer.

    :param module: maps a float batch ``(B, 3, H, W)`` to pooled features ``(B, num_features)``.
    :param num_features: the width of the pooled features.
    :param data_config: preprocessing the weights expect: ``input_size`` ``(3, H, W)``,
        ``mean`` and ``std`` (3 floats each), ``interpolation`` (``"bilinear"``, ``"bicubic"`` ...)
        and ``crop_pct``, as timm's ``resolve_data_config`` gives them.
    :param param_groups: names of ``module``'s parameters, grouped and ordered from the input
        side (stem) to the output side (last stage, final norm). Freezing a fraction ``f`` of
        the backbone freezes the first ``round(f * len(param_groups))`` groups.
    :param architecture: the model name the builder used (``resnet50``), enough to rebuild it.
    """

    module: nn.Module
    num_features: int
    data_config: dict[str, Any]
    param_groups: list[list[str]]
    architecture: str


@dataclass
class ImageDataset:
    """Labelled images returned by a dataset loader.

    :param class_names: the label names, index ``i`` naming label ``i``.
    :param train: ``(image, label)`` pairs to train on (and to split validation from when
        ``val`` is ``None``).
    :param val: an explicit validation set, or ``None`` for a stratified, seeded split of ``train``.
    :param test: an optional held-out test set, never seen by the search.
    :param origin: a short description for messages and ``model.json`` (``imagefolder:data/pets``).
    """

    class_names: list[str]
    train: Sequence[tuple[ImageItem, int]]
    val: Sequence[tuple[ImageItem, int]] | None = None
    test: Sequence[tuple[ImageItem, int]] | None = None
    origin: str = ""


@dataclass
class Component:
    """One registered backbone builder, head or dataset loader.

    :param kind: ``"backbone"``, ``"head"`` or ``"dataset"``.
    :param name: the name users type.
    :param build: the builder, factory or loader the plugin registered.
    :param plugin: the name of the plugin that registered it.
    :param description: one line for listings.
    :param space: for heads, the search space of the head's own parameters.
    """

    kind: str
    name: str
    build: Callable[..., Any]
    plugin: str
    description: str = ""
    space: dict[str, Any] = field(default_factory=dict)
