"""Built-in regularizers: ``l2sp`` and ``l1`` on the weights, ``delta`` and ``bss`` on the features.

Registered through ``register_regularizers`` exactly as a third party's would be. ``l2sp`` and
``l1`` read the search-space keys of the same names; ``delta`` and ``bss`` declare
``extra.delta`` and ``extra.bss``. Each is off at ``0``, its default. What each term is:
:mod:`automl_transfer_plugins.regularizer_terms` (imported when a fit builds one, so loading
this plugin imports no torch).
"""

from __future__ import annotations

import os
from typing import Any

from automl_transfer.plugin import TrainingContext, hookimpl


def build_l2sp(context: TrainingContext) -> Any:
    """Return L2-SP toward the backbone's starting weights at ``settings.l2sp``, or ``None`` at 0."""
    from automl_transfer_plugins.regularizer_terms import L2SP

    strength = context.settings.l2sp
    return L2SP(context.model.backbone.parameters(), strength) if strength > 0 else None


def build_l1(context: TrainingContext) -> Any:
    """Return L1 on the trainable weight matrices and kernels at ``settings.l1``, or ``None`` at 0."""
    from automl_transfer_plugins.regularizer_terms import L1

    strength = context.settings.l1
    if strength <= 0:
        return None
    return L1([parameter for parameter in context.model.parameters() if parameter.ndim > 1], strength)


def build_delta(context: TrainingContext) -> Any:
    """Return DELTA's feature-map distance at ``extra.delta`` over the trainable blocks, or ``None``.

    ``None`` also when no block trains (a wholly frozen backbone has nothing to hold back).
    """
    from automl_transfer_plugins.regularizer_terms import FeatureMapDistance

    strength = float(context.values["delta"])
    layers = trainable_blocks(context.param_groups, context.n_frozen_groups)
    if strength <= 0 or not layers:
        return None
    return FeatureMapDistance(context.model.backbone, context.source_backbone(), layers, strength)


def build_bss(context: TrainingContext) -> Any:
    """Return batch spectral shrinkage of the pooled features at ``extra.bss``, or ``None`` at 0."""
    from automl_transfer_plugins.regularizer_terms import BatchSpectralShrinkage

    strength = float(context.values["bss"])
    return BatchSpectralShrinkage(context.model.head, strength) if strength > 0 else None


def trainable_blocks(param_groups: list[list[str]], n_frozen_groups: int) -> list[str]:
    """Return the module that holds each trainable parameter group, input side first.

    A group's module is the longest module path its parameter names share (``blocks.3.1`` for
    ``blocks.3.1.conv.weight`` and ``blocks.3.1.bn.bias``); a group spread over the backbone's
    top level (a stem of a convolution and a norm) has none and is left out.

    :param param_groups: the backbone's parameter groups, input side first.
    :param n_frozen_groups: how many leading groups are frozen (skipped).
    :returns: module names, each once.
    """
    layers: list[str] = []
    for group in param_groups[n_frozen_groups:]:
        name = ".".join(os.path.commonprefix([name.split(".")[:-1] for name in group]))
        if name and name not in layers:
            layers.append(name)
    return layers


@hookimpl
def register_regularizers(register):
    """Register ``l2sp``, ``l1``, ``delta`` and ``bss``, applied in that order."""
    register("l2sp", build_l2sp, description="pull toward the pretrained weights (search-space key l2sp)")
    register("l1", build_l1, description="L1 on weight matrices and kernels (search-space key l1)")
    register("delta", build_delta, settings={"delta": 0.0},
             description="DELTA: keep the blocks' feature maps near the source network's (extra.delta)")
    register("bss", build_bss, settings={"bss": 0.0},
             description="batch spectral shrinkage of the smallest feature singular value (extra.bss)")
