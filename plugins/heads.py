"""Built-in classification heads: ``linear`` and ``mlp``.

``linear`` is a single ``nn.Linear`` from the backbone's pooled features to the logits and has
nothing to search. ``mlp`` is ``Linear(in, hidden) -> GELU -> Dropout(dropout) -> Linear(hidden,
classes)``; a search tries ``hidden`` in ``MLP_SPACE["hidden"]`` and ``dropout`` between 0 and 0.5
unless the search-space YAML narrows them (``head: {mlp: {hidden: 512}}``). torch is imported when
a head is built, not when the plugin loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from automl_transfer.plugin import hookimpl

if TYPE_CHECKING:
    from torch import nn

#: The search space of ``mlp``'s parameters, in the search-space YAML format.
MLP_SPACE = {"hidden": [256, 512], "dropout": {"low": 0.0, "high": 0.5}}


def build_linear(in_features: int, num_classes: int) -> nn.Module:
    """Return ``nn.Linear(in_features, num_classes)``: a linear classifier on the features."""
    from torch import nn

    return nn.Linear(in_features, num_classes)


def build_mlp(in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.0) -> nn.Module:
    """Return a two-layer classifier ``Linear -> GELU -> Dropout -> Linear``.

    :param in_features: the width of the backbone's pooled features.
    :param num_classes: the number of logits to produce.
    :param hidden: the width of the hidden layer.
    :param dropout: the probability of zeroing a hidden unit while training.
    :returns: an ``nn.Sequential`` mapping ``(batch, in_features)`` to ``(batch, num_classes)``.
    """
    from torch import nn

    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


@hookimpl
def register_heads(register):
    """Register the ``linear`` and ``mlp`` heads."""
    register("linear", build_linear, space={}, description="one linear layer on the pooled features")
    register("mlp", build_mlp, space=MLP_SPACE, description="Linear -> GELU -> Dropout -> Linear")
