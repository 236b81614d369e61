"""Freezing the input side of a backbone: a training step leaves frozen groups untouched."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from automl_transfer.contract.components import Backbone
from automl_transfer.errors import PluginError
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.model.sources import build_backbone

#: The block a parameter of a test model belongs to: ``layer2.0`` of a ResNet, ``blocks.3`` of a ViT.
BLOCK = {"timm:test_resnet@none": r"^(layer\d+\.\d+)\.", "timm:test_vit@none": r"^(blocks\.\d+)\."}


def train_one_step(backbone: Backbone, frozen) -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel(backbone.module, nn.Linear(backbone.num_features, 3), (0.5,) * 3, (0.5,) * 3)
    model.train()
    frozen.keep_frozen_in_eval(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = nn.functional.cross_entropy(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    return model


def running_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in module.named_buffers() if "running" in name}


@pytest.mark.parametrize("source", sorted(BLOCK))
def test_groups_are_a_stem_then_one_block_each_on_a_cnn_and_a_vit(source):
    groups = build_backbone(source).param_groups

    assert not any(re.match(BLOCK[source], name) for name in groups[0])
    for group in groups[1:]:
        assert len({re.match(BLOCK[source], name).group(1) for name in group if re.match(BLOCK[source], name)}) == 1


@pytest.mark.parametrize("source", sorted(BLOCK))
def test_a_training_step_changes_only_unfrozen_parameters(source):
    backbone = build_backbone(source)
    before = {name: parameter.detach().clone() for name, parameter in backbone.module.named_parameters()}
    stats_before = running_stats(backbone.module)

    frozen = freeze_backbone(backbone, 0.6)
    train_one_step(backbone, frozen)

    assert frozen.n_frozen_groups == round(0.6 * frozen.n_groups) >= 2
    frozen_blocks = backbone.param_groups[: frozen.n_frozen_groups]
    assert frozen.frozen_param_names == {name for group in frozen_blocks for name in group}
    for name, parameter in backbone.module.named_parameters():
        if name in frozen.frozen_param_names:
            assert parameter.grad is None and torch.equal(parameter, before[name]), name
    for group in backbone.param_groups[frozen.n_frozen_groups :]:
        assert any(not torch.equal(backbone.module.get_parameter(name), before[name]) for name in group)
    stats_after = running_stats(backbone.module)
    for name, value in stats_before.items():
        layer = name.rsplit(".", 1)[0]
        layer_frozen = f"{layer}.weight" in frozen.frozen_param_names
        assert torch.equal(stats_after[name], value) == layer_frozen, name


def test_the_resnet_has_batch_norms_on_both_sides_of_the_freeze():
    backbone = build_backbone("timm:test_resnet@none")
    frozen = freeze_backbone(backbone, 0.6)
    norms = [name for name, layer in backbone.module.named_modules() if isinstance(layer, nn.BatchNorm2d)]

    assert any(f"{name}.weight" in frozen.frozen_param_names for name in norms)
    assert any(f"{name}.weight" not in frozen.frozen_param_names for name in norms)


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.5, 2), (1.0, 5)])
def test_fraction_counts_groups_from_the_input(fraction, expected):
    backbone = build_backbone("timm:test_resnet@none")

    frozen = freeze_backbone(backbone, fraction)

    assert (frozen.n_groups, frozen.n_frozen_groups) == (5, expected)
    trainable = {name for name, p in backbone.module.named_parameters() if p.requires_grad}
    assert trainable == {name for group in backbone.param_groups[expected:] for name in group}
    frozen_sizes = [p.numel() for name, p in backbone.module.named_parameters() if name in frozen.frozen_param_names]
    assert frozen.n_frozen_params == sum(frozen_sizes)


def test_batch_norm_without_parameters_in_a_frozen_block_stays_in_eval():
    def block() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, affine=False))

    module = nn.Sequential(block(), block(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    groups = [["0.0.weight", "0.0.bias"], ["1.0.weight", "1.0.bias"]]
    backbone = Backbone(module, 3, {}, groups, "two-blocks")

    frozen = freeze_backbone(backbone, 0.5)
    module.train()
    frozen.keep_frozen_in_eval(module)

    assert not module[0][1].training
    assert module[1][1].training


def test_groups_naming_absent_parameters_are_a_plugin_error():
    module = nn.Sequential(nn.Conv2d(3, 3, 1))
    backbone = Backbone(module, 3, {}, [["0.weight", "0.bias"], ["1.weight"]], "broken")

    with pytest.raises(PluginError, match="broken .*1\\.weight"):
        freeze_backbone(backbone, 0.5)


def test_a_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        freeze_backbone(build_backbone("timm:test_resnet@none"), 1.5)
