"""An example automl-transfer plugin: a backbone, a head, a dataset, a weights layout, a regularizer,
a batch transform and an observer.

Installed, it adds to every search:

- the backbone builder ``tinycnn`` (sources ``tinycnn:small@none``, ``tinycnn:wide@none`` or
  ``tinycnn:small@weights.safetensors``): a four-stage convolutional network built from plain
  torch layers;
- the head ``cosine``: cosine similarity to one learned vector per class, divided by a
  ``temperature`` the search tunes;
- the dataset ``stripes`` (``stripes:per_class=30,size=32,seed=0``): generated images of
  stripes in four orientations, with a held-out test split;
- the weights layout ``tinycnn-v0``: checkpoints of an older ``tinycnn`` that named its layers
  ``conv1``, ``bn1``, ``conv2`` ... load into today's ``stages.N.*`` names
  (``tinycnn:small@old-checkpoint.pth`` just works);
- the regularizer ``confidence-penalty`` (Pereyra et al., 2017): ``extra.confidence_penalty``
  times the negative entropy of the predicted distribution is added to the loss, so that the
  model is not over-confident on few labels (``0``, the default, turns it off);
- the batch transform ``grey``: ``extra.grey_share`` of each training batch, drawn at random,
  becomes grey (``0``, the default, turns it off), for targets whose colour should not matter;
- an ``epoch_end`` observer that appends every epoch's metrics to ``epochs.csv`` in the run
  directory.

Each hook receives a ``register`` callback (or, for observers, keyword arguments) and must
accept exactly the argument names of :mod:`automl_transfer.contract.hookspecs`; everything the plugin needs comes from
:mod:`automl_transfer.plugin`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from automl_transfer.plugin import (
    Backbone,
    DatasetError,
    ImageDataset,
    UnknownComponentError,
    WeightsError,
    hookimpl,
    parse_options,
    positive_int,
)

#: The ``tinycnn`` models: the channel width of each of the four stages.
TINYCNN_WIDTHS = {"small": (16, 32, 48, 64), "wide": (32, 64, 96, 128)}
#: The orientations ``stripes`` draws, one class each.
STRIPE_ANGLES = {"horizontal": 0.0, "vertical": 90.0, "diagonal": 45.0, "antidiagonal": 135.0}
#: The file the observer appends to, inside the run directory.
EPOCHS_CSV = "epochs.csv"
_EPOCHS_CSV_FIELDS = ("trial", "epoch", "train_loss", "val_loss", "accuracy", "macro_f1")


class TinyCNN(nn.Module):
    """Four stages of ``Conv -> BatchNorm -> ReLU``, each halving the image, then average pooling.

    :param widths: the output channels of the four stages.
    """

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        stages = []
        in_channels = 3
        for width in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.num_features = in_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised images ``(B, 3, H, W)`` to pooled features ``(B, num_features)``."""
        return self.stages(images).mean(dim=(2, 3))


def build_tinycnn(model: str, weights: str | None) -> Backbone:
    """Build a ``tinycnn`` backbone with random weights.

    :param model: ``"small"`` or ``"wide"`` (see :data:`TINYCNN_WIDTHS`).
    :param weights: ``"none"`` for random initialisation. The core loads local weight files
        itself after building with ``"none"``, so a builder only sees ``None`` (its default
        pretrained weights) or a tag it defines.
    :returns: the backbone, with one parameter group per stage, stem first.
    :raises UnknownComponentError: an unknown model name.
    :raises WeightsError: pretrained weights were asked for; ``tinycnn`` has none.
    """
    if model not in TINYCNN_WIDTHS:
        raise UnknownComponentError(f"tinycnn has no model {model!r}; choose one of {', '.join(TINYCNN_WIDTHS)}")
    if weights != "none":
        raise WeightsError(
            f"tinycnn has no pretrained weights ({weights or 'default'} asked for); "
            f"write tinycnn:{model}@none to train from scratch, or tinycnn:{model}@PATH.safetensors"
        )
    module = TinyCNN(TINYCNN_WIDTHS[model])
    stage_groups = [
        [f"stages.{index}.{name}" for name, _ in stage.named_parameters()]
        for index, stage in enumerate(module.stages)
    ]
    return Backbone(
        module=module,
        num_features=module.num_features,
        data_config={
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
        param_groups=stage_groups,
        architecture=model,
    )


class CosineHead(nn.Module):
    """Logits ``cos(features, class vector) / temperature`` for each class.

    :param in_features: the width of the backbone's features.
    :param num_classes: the number of classes.
    :param temperature: divides the cosine similarities; smaller is more confident.
    """

    def __init__(self, in_features: int, num_classes: int, temperature: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) / math.sqrt(in_features))
        self.temperature = temperature

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map features ``(B, in_features)`` to logits ``(B, num_classes)``."""
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T / self.temperature


def build_cosine(in_features: int, num_classes: int, temperature: float = 0.1) -> nn.Module:
    """Return a :class:`CosineHead` (the factory the ``cosine`` head registers)."""
    return CosineHead(in_features, num_classes, temperature)


def draw_stripes(angle: float, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one RGB image of stripes at ``angle`` degrees with a random period, phase, colour and noise.

    :returns: a ``size`` x ``size`` PIL image.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    radians = math.radians(angle + rng.uniform(-10, 10))
    across = cols * math.sin(radians) + rows * math.cos(radians)
    period = rng.uniform(4, 9)
    wave = 0.5 + 0.5 * np.sin(2 * math.pi * across / period + rng.uniform(0, 2 * math.pi))
    colour = rng.uniform(0.3, 1.0, size=3)
    pixels = wave[..., None] * colour + rng.normal(0, 0.15, size=(size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="RGB")


def load_stripes(location: str | None) -> ImageDataset:
    """Generate the ``stripes`` dataset: four classes of stripe orientation.

    :param location: ``key=value`` options: ``per_class`` training images per class (default
        30), ``test_per_class`` held-out test images per class (default 20), ``size`` in pixels
        (default 32) and ``seed`` (default 0).
    :returns: the dataset, images in memory; validation is split from ``train`` by the core.
    :raises DatasetError: an unknown option or a bad value.
    """
    options = parse_options(
        location,
        {"per_class": positive_int, "test_per_class": positive_int, "size": positive_int, "seed": int},
        "stripes",
    )
    per_class = options.get("per_class", 30)
    test_per_class = options.get("test_per_class", 20)
    size = options.get("size", 32)
    if size < 8:
        raise DatasetError(f"stripes: size must be at least 8 pixels, not {size}")
    rng = np.random.default_rng(options.get("seed", 0))
    train, test = [], []
    for label, angle in enumerate(STRIPE_ANGLES.values()):
        train += [(draw_stripes(angle, size, rng), label) for _ in range(per_class)]
        test += [(draw_stripes(angle, size, rng), label) for _ in range(test_per_class)]
    return ImageDataset(class_names=list(STRIPE_ANGLES), train=train, test=test, origin=f"stripes:{location or ''}")


@hookimpl
def register_backbones(register):
    """Register the ``tinycnn`` backbone builder."""
    register("tinycnn", build_tinycnn, description="tiny 4-stage CNN from plain torch layers (example plugin)")


@hookimpl
def register_heads(register):
    """Register the ``cosine`` head, whose temperature the search tunes on a log scale."""
    register(
        "cosine",
        build_cosine,
        space={"temperature": {"low": 0.05, "high": 0.5, "log": True}},
        description="cosine similarity to learned class vectors / temperature (example plugin)",
    )


def from_tinycnn_v0(architecture, state_dict, model):
    """Rename a checkpoint of the old ``tinycnn`` (``convN.*``, ``bnN.*``, N from 1) to ``stages.N-1.*``.

    :param architecture: the backbone's architecture name (``small``, ``wide``; any other is declined).
    :param state_dict: the file's tensors by name; not changed.
    :param model: the backbone built with random weights (its shapes are checked by the core).
    :returns: the renamed tensors, or ``None`` when the file is not in the old layout.
    """
    if architecture not in TINYCNN_WIDTHS or "conv1.weight" not in state_dict:
        return None
    layers = {"conv": 0, "bn": 1}
    renamed = {}
    for name, tensor in state_dict.items():
        layer, _, rest = name.partition(".")
        kind, number = layer.rstrip("0123456789"), layer[len(layer.rstrip("0123456789")) :]
        if kind not in layers or not number:
            return None
        renamed[f"stages.{int(number) - 1}.{layers[kind]}.{rest}"] = tensor
    return renamed


@hookimpl
def register_weight_layouts(register):
    """Register the ``tinycnn-v0`` layout: the old ``tinycnn``'s layer names."""
    register("tinycnn-v0", from_tinycnn_v0, description="old tinycnn checkpoints (conv1, bn1, ...) (example plugin)")


class ConfidencePenalty:
    """The loss term ``strength * sum(p * log p)``, the negative entropy of the softmax ``p``.

    :param strength: the term's coefficient, above 0.
    """

    def __init__(self, strength: float):
        self.strength = strength

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the batch's mean negative entropy times ``strength`` (``targets`` are not used)."""
        log_probabilities = F.log_softmax(logits.float(), dim=1)
        return self.strength * (log_probabilities.exp() * log_probabilities).sum(dim=1).mean()


def build_confidence_penalty(context):
    """Return :class:`ConfidencePenalty` at ``extra.confidence_penalty``, or ``None`` when it is 0.

    :param context: the fit's :class:`automl_transfer.plugin.TrainingContext`.
    """
    strength = float(context.values["confidence_penalty"])
    return ConfidencePenalty(strength) if strength > 0 else None


def build_grey(context):
    """Return a transform turning ``extra.grey_share`` of a batch's images grey, or ``None`` when it is 0.

    :param context: the fit's :class:`automl_transfer.plugin.TrainingContext`.
    :returns: ``grey(images, labels) -> (images, labels)``; it draws from torch's global
        generator, which the core seeds for every trial.
    """
    share = float(context.values["grey_share"])
    if share <= 0:
        return None

    def grey(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.rand(images.shape[0], device=images.device) < share
        luminance = (images * torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return torch.where(chosen.view(-1, 1, 1, 1), luminance.expand_as(images), images), labels

    return grey


@hookimpl
def register_regularizers(register):
    """Register ``confidence-penalty``, read from ``extra.confidence_penalty``."""
    register("confidence-penalty", build_confidence_penalty, settings={"confidence_penalty": 0.0},
             description="penalise confident predictions (negative entropy) (example plugin)")


@hookimpl
def register_batch_transforms(register):
    """Register ``grey``, read from ``extra.grey_share``."""
    register("grey", build_grey, settings={"grey_share": 0.0},
             description="turn a share of each batch grey (example plugin)")


@hookimpl
def register_datasets(register):
    """Register the generated ``stripes`` dataset."""
    register("stripes", load_stripes, description="generated stripes in 4 orientations (example plugin)")


#: The run directory of each search in progress, by study name.
_run_dirs: dict[str, Path] = {}


@hookimpl
def search_start(run_dir, study, settings):
    """Remember where the search writes, so :func:`epoch_end` can put ``epochs.csv`` there."""
    _run_dirs[study.study_name] = Path(run_dir)


@hookimpl
def epoch_end(trial, epoch, metrics):
    """Append the epoch's metrics as one row of ``epochs.csv`` in the run directory."""
    run_dir = _run_dirs.get(trial.study.study_name)
    if run_dir is None:
        return
    path = run_dir / EPOCHS_CSV
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_EPOCHS_CSV_FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow({"trial": trial.number, "epoch": epoch, **metrics})


@hookimpl
def search_end(run_dir, study, summary):
    """Forget the finished search's run directory."""
    _run_dirs.pop(study.study_name, None)
