"""What a regularizer or batch-transform plugin receives when a fit starts: :class:`TrainingContext`.

The hooks that register them are in :mod:`automl_transfer.contract.hookspecs`
(``register_regularizers``, ``register_batch_transforms``). This module imports no torch at
run time, so a plugin that imports it stays cheap to load.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class TrainingContext:
    """One fit, as a regularizer or batch transform sees it when the fit starts.

    :param model: the model being trained, a ``TransferModel``: ``model.backbone`` maps
        normalised images to pooled features, ``model.head`` maps those to logits. Frozen
        parameters have ``requires_grad`` ``False``.
    :param settings: the trial's training settings (``settings.lr``, ``settings.l2sp``,
        ``settings.extra`` ...; see the README's table of search-space keys).
    :param values: this component's own settings: each ``extra`` key it declared, with the
        trial's value or the declared default.
    :param param_groups: the names of the backbone's parameters (inside ``model.backbone``) in
        groups, one per block, from the input side; the first ``n_frozen_groups`` are frozen.
    :param n_frozen_groups: how many groups, from the input side, are frozen.
    :param num_classes: how many classes the head predicts.
    :param device: where the fit trains.
    """

    model: nn.Module
    settings: Any
    values: dict[str, Any]
    param_groups: list[list[str]]
    n_frozen_groups: int
    num_classes: int
    device: torch.device
    _source: list[nn.Module] = field(default_factory=list, repr=False)

    def source_backbone(self) -> nn.Module:
        """Return a frozen copy of the backbone as it was when the fit started, in eval mode.

        Call it from ``build``, before the first step: a later first call would copy trained
        weights. The copy is made on the first call and shared by every component of the fit
        (each context of one fit holds the same list), so two regularizers that compare with
        the source network cost one copy.
        """
        if not self._source:
            source = copy.deepcopy(self.model.backbone).eval()
            for parameter in source.parameters():
                parameter.requires_grad_(False)
            self._source.append(source)
        return self._source[0]
