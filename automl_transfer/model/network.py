"""The network a trial trains and the best-model files hold: normalisation, backbone, head."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class TransferModel(nn.Module):
    """A backbone with a new classification head, taking images scaled to ``[0, 1]``.

    Normalisation lives inside the model so that training, evaluation and ``predict`` can
    never disagree on it. ``state_dict()`` keys start with ``backbone.`` or ``head.``; the
    mean and std are not part of it (they are recorded in ``model.json``).

    :param backbone: maps normalised images ``(B, 3, H, W)`` to features ``(B, F)``.
    :param head: maps features ``(B, F)`` to logits ``(B, num_classes)``.
    :param mean: per-channel mean the backbone's weights expect.
    :param std: per-channel standard deviation the backbone's weights expect.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for images ``(B, 3, H, W)`` with values in ``[0, 1]``."""
        normalised = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.head(self.backbone(normalised))
