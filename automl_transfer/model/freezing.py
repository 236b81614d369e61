"""Freezing the input side of a backbone.

A backbone lists its parameters in groups ordered from the input (stem) to the output (last
block and final norm), one group per block for every plugin: a residual block of a CNN and
a transformer block of a ViT are each one group. Freezing a fraction ``f`` therefore means
"the first ``f`` of the network's blocks" whatever the architecture.

Example::

    frozen = freeze_backbone(backbone, 0.5)   # first half of the groups
    model.train()
    frozen.keep_frozen_in_eval(model)         # frozen layers in eval: fixed batch-norm stats, no dropout
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from automl_transfer.contract.components import Backbone
from automl_transfer.errors import PluginError


@dataclass(frozen=True)
class FrozenLayers:
    """What :func:`freeze_backbone` froze.

    :param n_groups: how many parameter groups the backbone has.
    :param n_frozen_groups: how many of them, counted from the input side, are frozen.
    :param frozen_param_names: names (in ``backbone.module``) of the frozen parameters.
    :param n_frozen_params: how many scalar values the frozen parameters hold together.
    :param param_groups: the backbone's parameter groups, input side first (the first
        ``n_frozen_groups`` are the frozen ones).
    """

    n_groups: int
    n_frozen_groups: int
    frozen_param_names: frozenset[str]
    n_frozen_params: int
    param_groups: tuple[tuple[str, ...], ...] = ()

    def keep_frozen_in_eval(self, module: nn.Module) -> None:
        """Put frozen layers back into eval mode; call it after ``module.train()``.

        Every module whose parameters are all frozen is put in eval mode with everything
        inside it: a frozen batch norm keeps the running mean and variance the pretrained
        weights left, and a dropout inside a frozen block stops dropping. The frozen part of
        the network is then a fixed, deterministic function of its input, which is what lets
        its output be computed once and reused
        (:mod:`automl_transfer.training.frozen_prefix`). Other layers keep the mode
        ``module.train()`` gave them.

        :param module: the backbone module or any model containing it (a ``TransferModel``).
        """
        for part in module.modules():
            parameters = list(part.parameters())
            if parameters and not any(parameter.requires_grad for parameter in parameters):
                part.eval()


def freeze_backbone(backbone: Backbone, fraction: float) -> FrozenLayers:
    """Freeze the first ``round(fraction * len(backbone.param_groups))`` parameter groups.

    The parameters of those groups get ``requires_grad = False``; the others are left as
    they are. ``0`` freezes nothing, ``1`` freezes the whole backbone.

    :param backbone: the backbone to freeze, modified in place.
    :param fraction: between 0 and 1, the share of groups to freeze from the input side.
    :returns: what was frozen, with :meth:`FrozenLayers.keep_frozen_in_eval` for training.
    :raises ValueError: when ``fraction`` is outside ``[0, 1]``.
    :raises PluginError: when ``param_groups`` names parameters the module does not have.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze fraction must be between 0 and 1, got {fraction}")
    parameters = dict(backbone.module.named_parameters())
    unknown = sorted({name for group in backbone.param_groups for name in group} - parameters.keys())
    if unknown:
        raise PluginError(
            f"backbone {backbone.architecture} lists parameter groups with names its module does not have: "
            f"{', '.join(unknown[:5])}; report this to the backbone plugin's author"
        )
    n_groups = len(backbone.param_groups)
    n_frozen_groups = round(fraction * n_groups)
    frozen_names = frozenset(name for group in backbone.param_groups[:n_frozen_groups] for name in group)
    for name in frozen_names:
        parameters[name].requires_grad_(False)
    n_frozen_params = sum(parameters[name].numel() for name in frozen_names)
    return FrozenLayers(
        n_groups=n_groups,
        n_frozen_groups=n_frozen_groups,
        frozen_param_names=frozen_names,
        n_frozen_params=n_frozen_params,
        param_groups=tuple(tuple(group) for group in backbone.param_groups),
    )
