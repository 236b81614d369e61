"""The objects plugins hand to the core: backbones, heads and datasets.

A backbone builder returns a :class:`Backbone`; a dataset loader returns an
:class:`ImageDataset`; a head builder returns a plain ``torch.nn.Module``. The registries
keep one :class:`Component` per registered name, remembering which plugin provided it.

This module imports neither torch nor PIL at run time: the type names below are only
annotations, so a plugin that imports it stays cheap to load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

#: One image of a dataset: a file path, or a PIL image already in memory.
ImageItem = Union[Path, "Image.Image"]

#: The ``WEIGHTS`` part of a source (``timm:resnet18@none``) that asks for random initialisation.
#: A backbone builder receives it as its ``weights`` argument.
NO_WEIGHTS = "none"

#: The largest side, in pixels, of the square images a model trains on or predicts from (in a
#: search space and in ``model.json``): every image of a dataset is decoded at this size, so a
#: larger one would need hundreds of gigabytes for an ordinary dataset.
MAX_IMAGE_SIZE = 2048

#: The resampling filters an image may be resized with (Pillow's names, as timm's data configs write them).
INTERPOLATION_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass
class Backbone:
    """A feature extractor ready for transfer, as a backbone builder returns it.

    Construct it with keyword arguments::

        Backbone(
            module=network,                  # nn.Module: (B, 3, H, W) floats -> (B, num_features)
            num_features=512,
            data_config={"input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406),
                         "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"},
            param_groups=[["stem.weight"], ["stages.0.conv.weight", ...], ...],
            architecture="resnet18",
        )

    :param module: maps a normalised float batch ``(B, 3, H, W)`` to pooled features
        ``(B, num_features)``; it has no classifier (the search adds a head). Its
        ``state_dict()`` keys are the names a weights file (``@FILE``) must use, without any
        prefix; keys the module lacks (an old classifier such as ``fc.*``) are dropped.
    :param num_features: the width of the pooled features.
    :param data_config: the preprocessing the weights expect, in timm's ``data_config`` form:
        ``input_size`` ``(3, H, W)`` (its ``H`` is the default training image size), ``mean``
        and ``std`` (3 floats each, for images scaled to ``[0, 1]``) and ``interpolation``
        (``"bilinear"``, ``"bicubic"``, ``"nearest"``, ...; default ``"bilinear"``).
        Other keys (``crop_pct``) are kept but not used.
    :param param_groups: the names of ``module``'s trainable parameters, grouped and ordered
        from the input side (stem) to the output side (last block, final norm); every
        parameter in exactly one group, one group per block. Freezing a fraction ``f`` of the
        backbone freezes the first ``round(f * len(param_groups))`` groups.
    :param architecture: the model name the builder used (``resnet50`` or ``resnet50.a1_in1k``):
        ``build(architecture, "none")`` must rebuild the same network, which is how a saved
        model is loaded again.
    :param weights_file: a weights file on disk that the core loads into ``module`` after the
        build, exactly as it loads a ``PLUGIN:MODEL@FILE`` source (safely, through the weights
        layouts, every tensor checked): how a builder whose pretrained weights ship in a
        package hands them over without loading files itself. ``None`` (the default): the
        module's weights are final.
    """

    module: nn.Module
    num_features: int
    data_config: dict[str, Any]
    param_groups: list[list[str]]
    architecture: str
    weights_file: Path | None = None


@dataclass
class ImageDataset:
    """Labelled images, as a dataset loader returns them.

    Construct it with the class names and ``(image, label)`` pairs::

        ImageDataset(
            class_names=["cat", "dog"],
            train=[(Path("data/cat/1.jpg"), 0), (Path("data/dog/7.png"), 1), ...],
            val=None,                 # or explicit pairs; None: the core splits train
            test=[(Path("data/test/cat/3.jpg"), 0), ...],   # optional, never searched on
            origin="mydata:data",
        )

    An image is a file path (any format Pillow reads; it is decoded once, before training)
    or a PIL image already in memory, in any mode: everything is converted to RGB.

    :param class_names: the label names, index ``i`` naming label ``i``; at least two,
        each different.
    :param train: ``(image, label)`` pairs to train on (and to split validation from when
        ``val`` is ``None``); every class needs at least one.
    :param val: an explicit validation set, or ``None`` for a stratified, seeded split of
        ``train`` (``--val-fraction``).
    :param test: an optional held-out test set; the search never sees it.
    :param origin: a short description for messages and ``model.json``
        (``imagefolder:data/pets``); the core fills in the dataset text when left empty.
    """

    class_names: list[str]
    train: Sequence[tuple[ImageItem, int]]
    val: Sequence[tuple[ImageItem, int]] | None = None
    test: Sequence[tuple[ImageItem, int]] | None = None
    origin: str = ""


@dataclass
class Component:
    """One registered backbone builder, head or dataset loader.

    :param kind: ``"backbone"``, ``"head"``, ``"dataset"``, ``"layout"`` (a weights layout),
        ``"regularizer"`` or ``"batch_transform"``.
    :param name: the name users type.
    :param build: the builder, factory, loader or layout converter the plugin registered.
    :param plugin: the name of the plugin that registered it.
    :param description: one line for listings.
    :param space: for heads, the search space of the head's own parameters.
    :param offline: for backbones, a callable returning the source texts whose pretrained
        weights are on this machine (``None``: the builder does not say).
    :param settings: for regularizers and batch transforms, the ``extra`` keys they read, each
        with the value that leaves them off.
    """

    kind: str
    name: str
    build: Callable[..., Any]
    plugin: str
    description: str = ""
    space: dict[str, Any] = field(default_factory=dict)
    offline: Callable[[], list[str]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
