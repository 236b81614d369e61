"""The built-in heads: registration through the plugin manager, shapes, parameters, training."""

import pytest
import torch
from torch import nn

from automl_transfer.registry import get_component


def test_heads_plugin_registers_linear_and_mlp_with_their_spaces():
    linear = get_component("head", "linear")
    mlp = get_component("head", "mlp")
    assert (linear.plugin, mlp.plugin) == ("heads", "heads")
    assert linear.space == {}
    assert mlp.space == {"hidden": [256, 512], "dropout": {"low": 0.0, "high": 0.5}}


@pytest.mark.parametrize("name, params", [("linear", {}), ("mlp", {}), ("mlp", {"hidden": 7, "dropout": 0.3})])
def test_head_maps_features_to_logits(name, params):
    head = get_component("head", name).build(24, 5, **params)
    assert head(torch.randn(3, 24)).shape == (3, 5)


def test_mlp_parameters_shape_the_module():
    build = get_component("head", "mlp").build
    head = build(24, 5, hidden=7, dropout=0.3)
    linears = [layer for layer in head.modules() if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(24, 7), (7, 5)]
    assert [layer.p for layer in head.modules() if isinstance(layer, nn.Dropout)] == [0.3]
    wider = build(24, 5, hidden=70)
    assert sum(p.numel() for p in wider.parameters()) > sum(p.numel() for p in head.parameters())


def test_mlp_dropout_acts_in_training_only():
    torch.manual_seed(0)
    head = get_component("head", "mlp").build(16, 3, hidden=64, dropout=0.5)
    features = torch.randn(4, 16)
    head.train()
    assert not torch.equal(head(features), head(features))
    head.eval()
    assert torch.equal(head(features), head(features))


@pytest.mark.parametrize("name", ["linear", "mlp"])
def test_head_learns_a_separable_problem(name):
    torch.manual_seed(0)
    features = torch.randn(128, 8)
    labels = (features[:, 0] + features[:, 1] > 0).long()
    head = get_component("head", name).build(8, 2)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(head(features), labels)
        loss.backward()
        optimiser.step()
    head.eval()
    accuracy = (head(features).argmax(dim=1) == labels).float().mean().item()
    assert accuracy > 0.9
