"""The L2-SP penalty: zero at the pretrained point, growing with distance, and its gradient."""

from __future__ import annotations

import pytest
import timm
import torch

from automl_transfer_plugins.regularizer_terms import L2SP


@pytest.fixture
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=0)


def test_penalty_is_exactly_zero_at_the_starting_point(backbone):
    assert L2SP(backbone.parameters(), 0.5).penalty().item() == 0.0


def test_penalty_grows_with_the_distance_from_the_start(backbone):
    l2sp = L2SP(backbone.parameters(), 0.5)
    generator = torch.Generator().manual_seed(1)
    directions = [torch.randn(parameter.shape, generator=generator) for parameter in l2sp.parameters]
    squared_norm = sum(float(direction.pow(2).sum()) for direction in directions)
    penalties = []
    for step in (0.01, 0.02, 0.05, 0.1):
        with torch.no_grad():
            for parameter, anchor, direction in zip(l2sp.parameters, l2sp.anchors, directions):
                parameter.copy_(anchor + step * direction)
        penalties.append(l2sp.penalty().item())
        assert penalties[-1] == pytest.approx(0.5 / 2 * step**2 * squared_norm, rel=1e-4)
    assert penalties == sorted(penalties) and len(set(penalties)) == len(penalties)


def test_added_gradient_is_the_gradient_of_the_penalty(backbone):
    l2sp = L2SP(backbone.parameters(), 0.3)
    with torch.no_grad():
        for parameter in l2sp.parameters:
            parameter.add_(torch.randn_like(parameter) * 0.1)
    l2sp.penalty().backward()
    expected = [parameter.grad.clone() for parameter in l2sp.parameters]
    for parameter in l2sp.parameters:
        parameter.grad.zero_()

    l2sp.add_gradient()

    for parameter, gradient in zip(l2sp.parameters, expected):
        torch.testing.assert_close(parameter.grad, gradient)


def test_frozen_parameters_are_not_penalised(backbone):
    frozen = list(backbone.conv1.parameters())
    for parameter in frozen:
        parameter.requires_grad_(False)
    l2sp = L2SP(backbone.parameters(), 1.0)
    assert not {id(parameter) for parameter in frozen} & {id(parameter) for parameter in l2sp.parameters}
    assert len(l2sp.parameters) == sum(1 for parameter in backbone.parameters() if parameter.requires_grad)


def test_zero_strength_keeps_nothing_and_does_nothing(backbone):
    l2sp = L2SP(backbone.parameters(), 0.0)
    assert l2sp.parameters == [] and l2sp.anchors == []
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(1.0)
    assert l2sp.penalty().item() == 0.0
    backbone(torch.rand(2, 3, 32, 32)).sum().backward()
    before = [parameter.grad.clone() for parameter in backbone.parameters()]
    l2sp.add_gradient()
    assert all(torch.equal(parameter.grad, grad) for parameter, grad in zip(backbone.parameters(), before))
