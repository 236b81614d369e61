"""Overhead: one trial through our stack against a minimal hand-written PyTorch loop.

Both train the same timm model from the same random initialisation recipe on the same
decoded digits (train and validation splits), for the same epochs and batch size, with one
validation pass per epoch, on the same device. Runs are interleaved (ours, minimal, minimal,
ours, ...) and the median wall time of each is compared.

Two measurements of our stack:

``trial``
    :func:`automl_transfer.trial_runner.run_trial`, as a search calls it: the backbone built
    through the plugin, freezing, ``fit_with_oom_retry`` and an Optuna trial receiving every
    epoch's score and asked whether to prune. Against :func:`common.minimal_fit`. This is the
    per-trial overhead, paid by every trial of a search. Goal: at most 1.05x.
``search``
    :class:`automl_transfer.search.TransferSearch` with one trial in a fresh run directory
    whose image cache is already filled: plugin and dataset loading, the space, source check,
    journal storage, the trial, saving the best model and ``summary.json``. Against the
    minimal loop plus the plain code that loads the same images from scikit-learn.

Run (about 3 minutes on 2 CPU cores)::

    python bench/overhead.py
    python bench/overhead.py --device cuda --model resnet50 --image-size 224   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import timm
import torch
from common import median, minimal_fit, publish, section_preamble, synchronize, table
from PIL import Image

from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import LabelledTensors, PreparedData, prepare_data
from automl_transfer.registry import load_plugins
from automl_transfer.search.search import TransferSearch
from automl_transfer.training.devices import resolve_device
from automl_transfer.training.params import TrialParams
from automl_transfer.training.trial import run_trial

SEED = 0
LR = 3e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
WARMUP_EPOCHS = 1.0
VAL_FRACTION = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two digits, 2 epochs, 1 repeat: proves the script works")
    parser.add_argument("--model", default="test_resnet", help="timm model, random init (default test_resnet)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--repeats", type=int, help="interleaved runs of each variant (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--results", type=Path, help="results file to update (default bench/RESULTS.md; not written by --quick)"
    )
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.dataset = f"digits:classes={'0-1' if args.quick else '0-9'},size={args.image_size}"
    return args


def trial_params(args: argparse.Namespace) -> dict:
    """The trial both sides train: the model from random weights, nothing frozen, no augmentation, no L2-SP."""
    return {
        "source": f"timm:{args.model}@none",
        "head": "linear",
        "head_params": {},
        "freeze_depth": 0.0,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "l2sp": 0.0,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "label_smoothing": LABEL_SMOOTHING,
        "augment": False,
        "warmup_epochs": WARMUP_EPOCHS,
        "extra": {},
    }


def space_yaml(args: argparse.Namespace) -> str:
    """The same trial as a search space with nothing left to search."""
    params = trial_params(args)
    fixed = {key: params[key] for key in ("source", "head", "freeze_depth", "lr", "weight_decay", "l2sp", "epochs",
                                          "batch_size", "image_size", "label_smoothing", "augment", "warmup_epochs")}
    return "\n".join(f"{key}: {str(value).lower() if isinstance(value, bool) else value}" for key, value in fixed.items())


def run_ours_trial(args: argparse.Namespace, data: PreparedData, device: torch.device) -> tuple[float, float]:
    """Time :func:`run_trial` with an Optuna trial that records every epoch; return ``(seconds, accuracy)``."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        trial.report(metrics["accuracy"], epoch)
        trial.set_user_attr(f"epoch_{epoch}", metrics)
        if trial.should_prune():
            raise optuna.TrialPruned()

    torch.manual_seed(SEED)
    start = time.perf_counter()
    params = TrialParams.from_dict({**trial_params(args), "interpolation": "bilinear"})
    trained = run_trial(params, lambda size, interpolation: data, device, on_epoch)
    synchronize(device)
    seconds = time.perf_counter() - start
    study.tell(trial, trained.metrics["accuracy"])
    return seconds, trained.metrics["accuracy"]


def run_minimal(args: argparse.Namespace, data: PreparedData, device: torch.device) -> tuple[float, float]:
    """Time the minimal loop on the same tensors, model creation included; return ``(seconds, accuracy)``."""
    torch.manual_seed(SEED)
    start = time.perf_counter()
    model = timm.create_model(args.model, pretrained=False, num_classes=len(data.class_names))
    config = timm.data.resolve_data_config({}, model=model)
    metrics = minimal_fit(
        model,
        (data.train.images, data.train.labels),
        (data.val.images, data.val.labels),
        mean=config["mean"],
        std=config["std"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        label_smoothing=LABEL_SMOOTHING,
        warmup_epochs=WARMUP_EPOCHS,
        device=device,
        seed=SEED,
    )
    synchronize(device)
    return time.perf_counter() - start, metrics["accuracy"]


def run_ours_search(args: argparse.Namespace, workdir: Path, warm_cache: Path, repeat: int) -> tuple[float, float]:
    """Time a one-trial :class:`TransferSearch` in a fresh run dir with a filled image cache."""
    run_dir = workdir / f"search-{repeat}"
    shutil.copytree(warm_cache, run_dir / "cache")
    torch.manual_seed(SEED)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the leaderboard of a one-trial search
        summary = TransferSearch(
            dataset=args.dataset,
            space=str(workdir / "space.yaml"),
            trials=1,
            run_dir=run_dir,
            device=args.device,
            seed=SEED,
            val_fraction=VAL_FRACTION,
            quiet=True,
        ).run()
    seconds = time.perf_counter() - start
    shutil.rmtree(run_dir)
    return seconds, summary["best_value"]


def run_minimal_with_loading(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """Time plain code that loads the digits from scikit-learn, splits them and runs the minimal loop."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    start = time.perf_counter()
    digits = load_digits()
    keep = np.isin(digits.target, [0, 1]) if args.quick else np.ones(len(digits.target), dtype=bool)
    images = [
        np.asarray(
            Image.fromarray(np.uint8(pixels * (255 / 16)), mode="L")
            .resize((args.image_size, args.image_size), Image.Resampling.BICUBIC)
            .convert("RGB")
        )
        for pixels in digits.images[keep]
    ]
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(digits.target[keep]).long()
    labels = labels - labels.min()
    train_rows, val_rows = train_test_split(
        np.arange(len(labels)), test_size=VAL_FRACTION, stratify=labels.numpy(), random_state=SEED
    )
    data = PreparedData(
        class_names=[str(label) for label in labels.unique().tolist()],
        train=_rows(tensor, labels, train_rows),
        val=_rows(tensor, labels, val_rows),
        test=None,
        n_skipped=0,
        fingerprint="",
    )
    _, accuracy = run_minimal(args, data, device)
    return time.perf_counter() - start, accuracy


def _rows(images: torch.Tensor, labels: torch.Tensor, rows: np.ndarray) -> LabelledTensors:
    """Return the images and labels of ``rows``."""
    index = torch.from_numpy(rows)
    return LabelledTensors(images[index], labels[index])


def interleaved(variants: dict, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Run each variant ``repeats`` times, alternating their order; return every ``(seconds, accuracy)``."""
    names = list(variants)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            results[name].append(variants[name](repeat))
            print(f"repeat {repeat}: {name} {results[name][-1][0]:.2f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure both comparisons, print them and update the results file."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_plugins()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="overhead-") as temporary:
        workdir = Path(temporary)
        (workdir / "space.yaml").write_text(space_yaml(args) + "\n")
        data = prepare_data(
            load_dataset(args.dataset), args.image_size, val_fraction=VAL_FRACTION, seed=SEED, cache_dir=workdir / "cache"
        )
        # One untimed run of each warms up allocators, kernels and imports.
        run_ours_trial(args, data, device)
        run_minimal(args, data, device)
        trial_results = interleaved(
            {
                "ours (run_trial)": lambda repeat: run_ours_trial(args, data, device),
                "minimal loop": lambda repeat: run_minimal(args, data, device),
            },
            args.repeats,
        )
        search_results = interleaved(
            {
                "ours (TransferSearch, 1 trial)": lambda repeat: run_ours_search(args, workdir, workdir / "cache", repeat),
                "minimal loop + loading": lambda repeat: run_minimal_with_loading(args, device),
            },
            args.repeats,
        )
    rows = []
    for results in (trial_results, search_results):
        (ours_name, ours), (minimal_name, minimal) = results.items()
        ours_median = median([seconds for seconds, _ in ours])
        minimal_median = median([seconds for seconds, _ in minimal])
        rows.append([
            ours_name,
            minimal_name,
            f"{ours_median:.2f}",
            f"{minimal_median:.2f}",
            f"**{ours_median / minimal_median:.3f}**",
            f"{median([accuracy for _, accuracy in ours]):.3f} / {median([accuracy for _, accuracy in minimal]):.3f}",
        ])
    body = (
        section_preamble("Overhead: one trial vs a minimal PyTorch loop (bench/overhead.py)", device)
        + f"- setup: `{args.dataset}` ({len(data.train)} train / {len(data.val)} validation images, {args.image_size} px), "
        f"timm `{args.model}` from random weights, {args.epochs} epochs, batch {args.batch_size}, validation every epoch; "
        f"median of {args.repeats} interleaved runs after one untimed warm-up run of each; goal: ratio <= 1.05\n\n"
        + table(["ours", "yardstick", "ours s", "yardstick s", "ratio", "val accuracy ours / yardstick"], rows)
        + "\n"
    )
    publish(f"overhead-{device.type}", body, args.quick, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
