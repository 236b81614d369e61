"""What the benchmarks share: the machine's description, the results file and a minimal training loop.

:func:`minimal_fit` is the yardstick the overhead and GPU benchmarks hold our stack against:
the fine-tuning loop a careful engineer writes by hand in plain PyTorch, doing the same work
per epoch as a trial (AdamW, warmup + cosine schedule, label smoothing, one validation pass
per epoch; bf16 autocast, channels-last and data resident on the GPU under CUDA) and nothing
else.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Few-shot tasks on real images that ship offline (``photos``: crops of ten photographs, training
#: and test crops from disjoint cells; ``photos, other half``: training crops from each
#: photograph's left half, test crops from its right half; ``digits``: scikit-learn's
#: handwritten digits upscaled), as dataset texts to fill in with ``shots`` and ``seed``.
REAL_TASKS = {
    "photos": "photos:per_class={shots},test_per_class=40,size=64,seed={seed}",
    "photos, other half": "photos:per_class={shots},test_per_class=40,size=64,seed={seed},split=halves",
    "digits": "digits:per_class={shots},size=64,seed={seed}",
}
#: ``--quick``: one tiny task, to prove a script works.
REAL_QUICK_TASKS = {"photos": "photos:per_class={shots},test_per_class=3,size=64,seed={seed}"}


def real_tasks(quick: bool, shots: int = 10, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The real few-shot tasks at ``shots`` labelled images per class (3 with ``quick``), ``{seed}`` left to fill.

    :param names: the tasks to keep (default: every one).
    """
    tasks = REAL_QUICK_TASKS if quick else {name: REAL_TASKS[name] for name in names or REAL_TASKS}
    return {name: text.format(shots=3 if quick else shots, seed="{seed}") for name, text in tasks.items()}


#: The results file every benchmark writes its own section of.
RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
_RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Each section is rewritten by the script named in it; the command that produced it is quoted "
    "so it can be run again.\n"
)


def machine_info(device: torch.device | None = None) -> dict[str, str]:
    """Describe the machine a benchmark runs on.

    :param device: the device measured; a CUDA device adds the GPU's name.
    :returns: ``platform``, ``python``, ``cpus`` (usable CPU cores), ``torch_threads``,
        ``torch`` and, on CUDA, ``gpu``.
    """
    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line() -> str:
    """Return the command that started this process, quoted so that it can be pasted back."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def section_preamble(title: str, device: torch.device | None) -> str:
    """Return a section's heading, date, exact command and machine lines, in Markdown."""
    machine = ", ".join(f"{key} {value}" for key, value in machine_info(device).items())
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"## {title}\n\n- date: {date}\n- command: `{command_line()}`\n- machine: {machine}\n"


def write_section(name: str, markdown: str, path: Path = RESULTS_PATH) -> None:
    """Replace (or append) the section ``name`` of the results file with ``markdown``.

    Sections sit between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, so each
    benchmark rewrites only its own.

    :param name: the section's key (``overhead``, ``search-quality``, ``gpu``...).
    :param markdown: the section's content, heading included.
    :param path: the results file (created with a short header when missing).
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else _RESULTS_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, markdown: str, quick: bool, results: Path | None) -> None:
    """Print a benchmark's section and record it in the results file.

    A ``--quick`` run only proves the script works, so it records nothing unless a results
    file is named explicitly.

    :param name: the section's key, as for :func:`write_section`.
    :param markdown: the section's content.
    :param quick: whether the run was a ``--quick`` one.
    :param results: the ``--results`` file, or ``None`` for :data:`RESULTS_PATH`.
    """
    print(markdown)
    if results is not None or not quick:
        write_section(name, markdown, results or RESULTS_PATH)


def median(values: list[float]) -> float:
    """Return the median of ``values``."""
    return statistics.median(values)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock reading includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minimal_fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    warmup_epochs: float,
    device: torch.device,
    compile_model: bool = False,
    seed: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` with a plain hand-written PyTorch loop.

    :param model: a network mapping normalised images to logits (e.g. ``timm.create_model``).
    :param train: uint8 images ``(N, 3, S, S)`` and int64 labels, on the CPU.
    :param val: the same for the validation images.
    :param mean: per-channel mean to normalise with.
    :param std: per-channel standard deviation to normalise with.
    :param epochs: passes over ``train``.
    :param batch_size: images per step; the last incomplete batch of an epoch is dropped.
    :param lr: peak learning rate of AdamW.
    :param weight_decay: AdamW's decoupled weight decay.
    :param label_smoothing: cross-entropy label smoothing.
    :param warmup_epochs: epochs of linear warmup before the cosine decay.
    :param device: where to train; on CUDA: bf16 autocast, channels-last, fused AdamW.
    :param compile_model: run the model through ``torch.compile``.
    :param seed: seeds initial shuffling.
    :param on_epoch: called with ``(epoch, metrics)`` after each validation pass.
    :returns: the last epoch's ``{"train_loss", "val_loss", "accuracy"}``.
    """
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    train_images, train_labels = (tensor.to(device) for tensor in train)
    val_images, val_labels = (tensor.to(device) for tensor in val)
    mean_tensor = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_tensor = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def to_input(images: torch.Tensor) -> torch.Tensor:
        batch = (images.float() / 255 - mean_tensor) / std_tensor
        return batch.contiguous(memory_format=torch.channels_last) if cuda else batch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True if cuda else None)
    batch_size = min(batch_size, len(train_labels))
    steps_per_epoch = len(train_labels) // batch_size
    total_steps = steps_per_epoch * epochs
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps // 2)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    generator = torch.Generator(device=device).manual_seed(seed)
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        order = torch.randperm(len(train_labels), device=device, generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * batch_size : (step + 1) * batch_size]
            with autocast:
                loss = F.cross_entropy(
                    forward(to_input(train_images[rows])), train_labels[rows], label_smoothing=label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        model.eval()
        correct = torch.zeros((), device=device)
        val_loss_sum = torch.zeros((), device=device)
        with torch.inference_mode(), autocast:
            for start in range(0, len(val_labels), batch_size):
                logits = forward(to_input(val_images[start : start + batch_size])).float()
                labels = val_labels[start : start + batch_size]
                val_loss_sum += F.cross_entropy(logits, labels, reduction="sum")
                correct += (logits.argmax(1) == labels).sum()
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / steps_per_epoch,
            "val_loss": float(val_loss_sum) / len(val_labels),
            "accuracy": float(correct) / len(val_labels),
        }
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return metrics


class EpochClock:
    """An ``on_epoch`` callback that records when each epoch ended.

    :param device: synchronised before each reading.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record the time at the end of ``epoch``."""
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def steady_seconds_per_epoch(self) -> float:
        """Return the median epoch time after the first (which pays for warmup and compilation)."""
        laps = [later - earlier for earlier, later in zip(self.ends, self.ends[1:])]
        return median(laps) if laps else self.ends[0] - self.start
