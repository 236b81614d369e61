"""Penalties on the weights beside AdamW's decay: L2-SP and L1.

L2-SP keeps fine-tuned weights near the pretrained starting point (Li et al., 2018): the
penalty is ``strength / 2 * sum ||w - w0||^2`` over the trainable backbone parameters, with
``w0`` their values when fine-tuning started. L1 pushes weights toward zero, sparsely: the
penalty is ``strength * sum |w|`` over the trainable weight matrices and kernels (norm scales
and biases are left alone, as weight decay leaves them).

Training adds each penalty's gradient (``strength * (w - w0)``, ``strength * sign(w)``)
straight to the parameters' gradients with fused multi-tensor kernels, which is the same
update as putting the penalty in the loss but without an autograd graph over every weight.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class L2SP:
    """The L2-SP penalty toward a snapshot of the given parameters.

    :param parameters: the parameters to hold near their current values (frozen ones,
        with ``requires_grad`` False, are skipped).
    :param strength: the penalty's coefficient; ``0`` keeps no snapshot and does nothing.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], strength: float):
        self.strength = float(strength)
        trainable = [parameter for parameter in parameters if parameter.requires_grad] if self.strength else []
        self.parameters: list[nn.Parameter] = trainable
        self.anchors: list[torch.Tensor] = [parameter.detach().clone() for parameter in trainable]

    def penalty(self) -> torch.Tensor:
        """Return ``strength / 2 * sum ||w - w0||^2`` as a differentiable scalar (``0`` when disabled)."""
        if not self.parameters:
            return torch.zeros(())
        squared = [(parameter - anchor).pow(2).sum() for parameter, anchor in zip(self.parameters, self.anchors)]
        return self.strength / 2 * torch.stack(squared).sum()

    def add_gradient(self) -> None:
        """Add the penalty's gradient ``strength * (w - w0)`` to each parameter's ``.grad``.

        Call it between ``loss.backward()`` and ``optimizer.step()``. Parameters that
        received no gradient this step are left alone.
        """
        if not self.parameters:
            return
        pairs = [(weight, anchor) for weight, anchor in zip(self.parameters, self.anchors) if weight.grad is not None]
        if not pairs:
            return
        weights = [weight.detach() for weight, _ in pairs]
        anchors = [anchor for _, anchor in pairs]
        gradients = [weight.grad for weight, _ in pairs]
        torch._foreach_add_(gradients, torch._foreach_sub(weights, anchors), alpha=self.strength)


class L1:
    """The L1 penalty ``strength * sum |w|`` on the given parameters.

    :param parameters: the parameters to push toward zero (frozen ones are skipped).
    :param strength: the penalty's coefficient; ``0`` does nothing.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], strength: float):
        self.strength = float(strength)
        self.parameters = [parameter for parameter in parameters if parameter.requires_grad] if self.strength else []

    def penalty(self) -> torch.Tensor:
        """Return ``strength * sum |w|`` as a differentiable scalar (``0`` when disabled)."""
        if not self.parameters:
            return torch.zeros(())
        return self.strength * torch.stack([parameter.abs().sum() for parameter in self.parameters]).sum()

    def add_gradient(self) -> None:
        """Add the penalty's (sub)gradient ``strength * sign(w)`` to each parameter's ``.grad``.

        Call it between ``loss.backward()`` and ``optimizer.step()``.
        """
        for parameter in self.parameters:
            if parameter.grad is not None:
                parameter.grad.add_(parameter.detach().sign(), alpha=self.strength)
