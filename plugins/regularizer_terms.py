"""The built-in regularizers' terms: L2-SP and L1 on the weights, DELTA and BSS on the features.

:mod:`automl_transfer_plugins.regularizers` registers them; this module imports torch, so it
is imported only when a fit builds one.

**Weights.**

L2-SP keeps fine-tuned weights near the pretrained starting point (Li et al., 2018): the
penalty is ``strength / 2 * sum ||w - w0||^2`` over the trainable backbone parameters, with
``w0`` their values when fine-tuning started. L1 pushes weights toward zero, sparsely: the
penalty is ``strength * sum |w|`` over the trainable weight matrices and kernels (norm scales
and biases are left alone, as weight decay leaves them).

Training adds each penalty's gradient (``strength * (w - w0)``, ``strength * sign(w)``)
straight to the parameters' gradients with fused multi-tensor kernels, which is the same
update as putting the penalty in the loss but without an autograd graph over every weight.

**Features.** DELTA (Li et al., 2019) keeps the fine-tuned network's feature maps near the
source network's on the same images: the term is ``strength * mean over layers of
mean((f - f0)^2)``, ``f`` a trainable block's output and ``f0`` the source network's. It is
the paper's behavioural term without its attention weights, which come from the source
classifier that transfer drops. BSS (Chen et al., 2019, batch spectral shrinkage) shrinks the
smallest singular values of the batch's pooled features, where features that transfer badly
live: the term is ``strength * sum of the k smallest sigma_i^2``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterable

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

    @property
    def undecayed(self) -> list[nn.Parameter]:
        """The parameters AdamW must not also decay: L2-SP replaces weight decay on them."""
        return self.parameters

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


class FeatureMapDistance:
    """DELTA's term: how far the trainable blocks' outputs moved from the source network's.

    Forward hooks keep what enters the backbone and what each layer returns; :meth:`loss`
    runs the source network on the same input (without gradients) and compares. Its norm
    layers run in the mode of their trainable twins (batch statistics while those train,
    without updating the source's running statistics) and everything else in eval mode, so
    the term is exactly 0 before the first step.

    :param backbone: the trainable backbone (hooks are added to it until :meth:`close`).
    :param source: the frozen source backbone, the same architecture with the starting weights.
    :param layers: names (in both modules) of the modules whose outputs are compared.
    :param strength: the term's coefficient, above 0.
    """

    #: The source network needs the backbone's input: the frozen layers run every step.
    reads_images = True

    def __init__(self, backbone: nn.Module, source: nn.Module, layers: list[str], strength: float):
        self.source = source
        self.strength = float(strength)
        self.layers = layers
        self.outputs: dict[str, torch.Tensor] = {}
        self.source_outputs: dict[str, torch.Tensor] = {}
        self.input: torch.Tensor | None = None
        trainable, frozen = dict(backbone.named_modules()), dict(source.named_modules())
        self.norm_twins = [
            (frozen[name], module) for name, module in trainable.items() if hasattr(module, "track_running_stats")
        ]
        for norm, _ in self.norm_twins:
            norm.track_running_stats = False  # batch statistics in train mode, running ones never updated
        self.handles = [backbone.register_forward_pre_hook(self._keep_input)]
        for name in layers:
            self.handles.append(trainable[name].register_forward_hook(partial(_keep_output, self.outputs, name)))
            self.handles.append(frozen[name].register_forward_hook(partial(_keep_output, self.source_outputs, name)))

    def _keep_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.input = args[0]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return ``strength * mean over layers of mean((f - f0)^2)`` for the batch just forwarded."""
        for norm, twin in self.norm_twins:
            norm.train(twin.training)
        with torch.no_grad():
            self.source(self.input)
        distances = [
            (self.outputs[name].float() - self.source_outputs[name].float()).pow(2).mean() for name in self.layers
        ]
        return self.strength * torch.stack(distances).mean()

    def close(self) -> None:
        """Remove the hooks and drop the kept tensors."""
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()
        self.source_outputs.clear()
        self.input = None


def _keep_output(store: dict[str, torch.Tensor], name: str, module: nn.Module, args: Any, output: Any) -> None:
    if isinstance(output, torch.Tensor):
        store[name] = output


class BatchSpectralShrinkage:
    """BSS's term on the pooled features each batch gives the head.

    :param head: the head; a forward pre-hook keeps its input until :meth:`close`.
    :param strength: the term's coefficient, above 0.
    :param k: how many of the smallest singular values are shrunk (the paper's default is 1).
    """

    def __init__(self, head: nn.Module, strength: float, k: int = 1):
        self.strength = float(strength)
        self.k = k
        self.features: torch.Tensor | None = None
        self.handle = head.register_forward_pre_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features = args[0]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return ``strength * sum of the k smallest squared singular values`` of the batch's features."""
        singular_values = torch.linalg.svdvals(self.features.float())
        return self.strength * singular_values[-self.k :].pow(2).sum()

    def close(self) -> None:
        """Remove the hook and drop the kept features."""
        self.handle.remove()
        self.features = None
