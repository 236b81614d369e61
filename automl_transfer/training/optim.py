"""The optimiser and learning-rate schedule of a trial: AdamW with warmup and cosine decay."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)


def build_optimizer(
    decayed: list[nn.Parameter],
    undecayed: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    device: torch.device,
) -> torch.optim.AdamW:
    """Return AdamW over two parameter groups: with and without decoupled weight decay.

    Only trainable parameters should be passed: frozen ones get no optimiser state.

    :param decayed: parameters decayed toward zero (matrices and convolution kernels).
    :param undecayed: parameters never decayed (norm scales, biases, other 1-d tensors).
    :param lr: the peak learning rate.
    :param weight_decay: AdamW's decoupled weight decay for ``decayed``.
    :param device: where the parameters live; on CUDA the fused implementation is used.
    :returns: the optimiser; empty groups are left out.
    """
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [group for group in groups if group["params"]],
        lr=lr,
        fused=True if device.type == "cuda" else None,
    )


def warmup_steps_for(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """Return how many optimiser steps the warmup lasts.

    :param warmup_epochs: the warmup length in epochs (fractions allowed).
    :param steps_per_epoch: optimiser steps per epoch.
    :param total_steps: optimiser steps in the whole run.
    :returns: ``round(warmup_epochs * steps_per_epoch)``, at most half of ``total_steps`` so
        that even a one-epoch run decays.
    """
    return max(0, min(round(warmup_epochs * steps_per_epoch), total_steps // 2))


def build_lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> LRScheduler:
    """Return a per-step schedule: linear warmup to the peak, then cosine decay toward 0.

    Step ``t < warmup_steps`` runs at ``lr * (t + 1) / (warmup_steps + 1)``; step
    ``warmup_steps`` at the peak ``lr``; the rest follow a half cosine that would reach 0 at
    ``total_steps``. Call ``step()`` after every ``optimizer.step()``.

    :param optimizer: the optimiser whose groups' ``lr`` is the peak.
    :param total_steps: optimiser steps in the whole run (at least 1).
    :param warmup_steps: steps of linear warmup, below ``total_steps``.
    :returns: the scheduler.
    """
    if warmup_steps == 0:
        return CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    warmup = LinearLR(optimizer, start_factor=1 / (warmup_steps + 1), total_iters=warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
