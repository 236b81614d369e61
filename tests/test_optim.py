"""The warmup + cosine schedule, stepped on its own."""

from __future__ import annotations

import math

import pytest
import torch

from automl_transfer.training.optim import (
    build_lr_schedule,
    build_optimizer,
    warmup_steps_for,
)


def lrs_seen(total_steps: int, warmup_steps: int, lr: float = 1.0) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = build_optimizer([weight], [], lr, 0.0, torch.device("cpu"))
    schedule = build_lr_schedule(optimizer, total_steps, warmup_steps)
    seen = []
    for _ in range(total_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return seen


def test_warmup_is_linear_then_cosine():
    seen = lrs_seen(total_steps=10, warmup_steps=3)
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert seen[4:] == pytest.approx([(1 + math.cos(math.pi * step / 7)) / 2 for step in range(1, 7)])


def test_without_warmup_the_first_step_is_the_peak():
    seen = lrs_seen(total_steps=5, warmup_steps=0, lr=0.1)
    assert seen[0] == pytest.approx(0.1)
    assert all(earlier > later > 0 for earlier, later in zip(seen, seen[1:]))


@pytest.mark.parametrize(
    ("warmup_epochs", "steps_per_epoch", "total_steps", "expected"),
    [(1.0, 10, 50, 10), (0.5, 10, 50, 5), (0.0, 10, 50, 0), (1.0, 10, 10, 5), (3.0, 4, 8, 4)],
)
def test_warmup_lasts_at_most_half_the_run(warmup_epochs, steps_per_epoch, total_steps, expected):
    assert warmup_steps_for(warmup_epochs, steps_per_epoch, total_steps) == expected


def test_empty_groups_are_left_out():
    weight, bias = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([weight], [bias], 0.1, 0.05, torch.device("cpu"))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
    assert len(build_optimizer([], [bias], 0.1, 0.05, torch.device("cpu")).param_groups) == 1
