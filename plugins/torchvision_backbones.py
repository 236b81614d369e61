"""Backbones from torchvision's classification models, as ``torchvision:MODEL[@WEIGHTS]``.

``torchvision:resnet50`` starts from the model's ``DEFAULT`` weights,
``torchvision:resnet50@IMAGENET1K_V2`` from the named member of its weights enum (any case),
``torchvision:resnet50@none`` from random weights. The final ``nn.Linear`` of the classifier
is replaced by ``nn.Identity``, so the model returns pooled features; what comes before it in
the classifier (ConvNeXt's norm, MobileNetV3's hidden layer) stays.

Parameter groups follow the module tree, input to output:

* a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` or a subclass)
  *holds blocks* when one of its children has children of its own. Each such child is a
  block (a residual block, a ViT encoder layer, EfficientNet's stem conv), unless it is
  itself a container holding blocks, like a stage in EfficientNet's ``features``: then its
  blocks count. A block is never split further, and a single layer in the container
  (DenseNet's ``conv0``) is not a block. Each block is one group.
* parameters outside every block form a stem group when they come before the first block
  (ResNet's ``conv1``/``bn1``, a ViT's class token, patch projection and position embedding)
  and join the preceding group otherwise (a final norm joins the last block).

So a ResNet-18 has a stem and eight residual-block groups and a ViT-B/16 a stem and twelve
encoder-layer groups, as in timm. torch and torchvision are imported when a backbone is built,
not when the plugin loads.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from automl_transfer.plugin import (
    NO_WEIGHTS,
    Backbone,
    UnknownComponentError,
    WeightsError,
    WeightsUnreachableError,
    hookimpl,
)

if TYPE_CHECKING:
    from torch import nn

#: Model-name prefix -> the attribute holding the classifier whose last ``nn.Linear`` goes.
CLASSIFIERS = {
    "convnext": "classifier",
    "densenet": "classifier",
    "efficientnet": "classifier",
    "maxvit": "classifier",
    "mnasnet": "classifier",
    "mobilenet": "classifier",
    "regnet": "fc",
    "resnet": "fc",
    "resnext": "fc",
    "shufflenet": "fc",
    "swin": "head",
    "vit": "heads",
    "wide_resnet": "fc",
}

#: Preprocessing for models without pretrained weights: torchvision's ImageNet recipe.
IMAGENET_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}



@hookimpl
def register_backbones(register):
    """Register the ``torchvision`` backbone builder."""
    register(
        "torchvision",
        build_torchvision_backbone,
        description="torchvision classification models, e.g. torchvision:resnet50@IMAGENET1K_V2",
    )


def build_torchvision_backbone(model: str, weights: str | None) -> Backbone:
    """Build torchvision classification model ``model`` as a pooled-feature backbone.

    :param model: a torchvision classification model name (``resnet50``, ``vit_b_16``).
    :param weights: ``None`` for the ``DEFAULT`` weights, ``"none"`` for random weights, or a
        member of the model's weights enum (``"IMAGENET1K_V2"``).
    :returns: the backbone. ``data_config`` comes from the weights' transforms (the
        ``DEFAULT`` weights' for ``"none"``); ``architecture`` is ``model``.
    :raises UnknownComponentError: an unknown model (close matches are named) or one whose
        family this plugin cannot turn into a feature extractor (the supported ones are listed).
    :raises WeightsError: an unknown weights tag (the valid ones are listed), or weights that
        can be neither downloaded nor found in torch's cache.
    """
    import torch
    from torchvision import models

    family = _family(model)
    weights_enum = models.get_model_weights(model)
    chosen = None if weights == NO_WEIGHTS else _weights_member(model, weights_enum, weights)
    try:
        network = models.get_model(model, weights=chosen)
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise WeightsUnreachableError(
            f"pretrained weights torchvision:{model}@{chosen.name} could not be downloaded from {chosen.url} "
            f"and are not in torch's cache ({Path(torch.hub.get_dir()) / 'checkpoints'}): "
            f"{reason}. Download them once while online, or start from a local file with "
            f"torchvision:{model}@/path/to/weights.safetensors, or from random weights with torchvision:{model}@none",
            reason=reason,
        ) from error
    num_features = _drop_final_linear(network, CLASSIFIERS[family])
    reference = chosen or weights_enum.DEFAULT
    return Backbone(
        module=network,
        num_features=num_features,
        data_config=_data_config(reference),
        param_groups=block_param_groups(network),
        architecture=model,
    )


def block_param_groups(network: nn.Module) -> list[list[str]]:
    """Group ``network``'s trainable parameters by block, input to output (see the module doc).

    :param network: any ``nn.Module``; parameters are taken in registration order.
    :returns: parameter names per group, the stem first.
    """
    block_of = {}
    for block_name in _blocks(network, ""):
        for name, _ in network.get_submodule(block_name).named_parameters(prefix=block_name):
            block_of[name] = block_name
    groups: list[list[str]] = []
    current_block: str | None = None
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        block = block_of.get(name)
        if not groups or (block is not None and block != current_block):
            groups.append([])
            current_block = block
        groups[-1].append(name)
    return groups


def _blocks(module: nn.Module, prefix: str) -> list[str]:
    """Names of the blocks under ``module`` (itself named ``prefix``), in registration order."""
    containers = _containers()
    splits = isinstance(module, containers) and any(_has_children(child) for child in module.children())
    found = []
    for name, child in module.named_children():
        child_name = f"{prefix}.{name}" if prefix else name
        if not splits:
            found.extend(_blocks(child, child_name))  # look deeper for a container of blocks
        elif isinstance(child, containers) and (inner := _blocks(child, child_name)):
            found.extend(inner)  # a stage of blocks: split it
        elif _has_children(child):
            found.append(child_name)  # a block
        # else: a single layer in the container (DenseNet's conv0); its parameters are loose
    return found


def _containers() -> tuple[type, ...]:
    """The container classes whose children may be blocks."""
    from torch import nn

    return (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _family(model: str) -> str:
    from torchvision import models

    known = models.list_models(module=models)
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"; did you mean {', '.join(f'torchvision:{match}' for match in close)}?" if close else ""
        raise UnknownComponentError(f"torchvision has no classification model {model!r}{hint}")
    for prefix in sorted(CLASSIFIERS, key=len, reverse=True):
        if model.startswith(prefix):
            return prefix
    raise UnknownComponentError(
        f"torchvision:{model} cannot be used as a backbone yet; supported families: {', '.join(sorted(CLASSIFIERS))} "
        "(or use the timm plugin, which has most of these architectures)"
    )


def _weights_member(model: str, weights_enum, tag: str | None):
    if tag is None:
        return weights_enum.DEFAULT
    members = weights_enum.__members__
    key = tag if tag in members else tag.upper()
    if key not in members:
        raise WeightsError(
            f"torchvision:{model} has no weights {tag!r}; valid: {', '.join(members)}, or none for random weights"
        )
    return members[key]


def _drop_final_linear(network: nn.Module, classifier_name: str) -> int:
    """Replace the last ``nn.Linear`` in ``network.<classifier_name>`` by ``nn.Identity``.

    :returns: the replaced layer's ``in_features``: the width of the pooled features.
    """
    from torch import nn

    classifier = network.get_submodule(classifier_name)
    linear_names = [name for name, layer in classifier.named_modules() if isinstance(layer, nn.Linear)]
    last = f"{classifier_name}.{linear_names[-1]}" if linear_names[-1] else classifier_name
    num_features = network.get_submodule(last).in_features
    parent_name, _, attribute = last.rpartition(".")
    setattr(network.get_submodule(parent_name), attribute, nn.Identity())
    return num_features


def _data_config(weights) -> dict:
    """The preprocessing ``weights`` were trained with, in timm's ``data_config`` form."""
    from torchvision.transforms import InterpolationMode

    transform = weights.transforms()
    crop = getattr(transform, "crop_size", None)
    resize = getattr(transform, "resize_size", None)
    if not crop or not resize:
        return dict(IMAGENET_DATA_CONFIG)
    interpolation = getattr(transform, "interpolation", InterpolationMode.BILINEAR)
    return {
        "input_size": (3, crop[0], crop[0]),
        "interpolation": interpolation.value,
        "mean": tuple(transform.mean),
        "std": tuple(transform.std),
        "crop_pct": crop[0] / resize[0],
        "crop_mode": "center",
    }
