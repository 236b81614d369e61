"""GPU throughput: training images per second of a trial against a minimal PyTorch loop.

Both train the same randomly initialised timm model on the same synthetic images (no
download) with bf16 autocast and channels-last on CUDA, eagerly and under ``torch.compile``.
A trial runs through :func:`automl_transfer.training.trial.run_trial`, exactly as a search runs
it; the yardstick is :func:`common.minimal_fit`. A second table times trials at freeze depth 0,
0.5 and 1 with and without the caches of bench/fast_trials.py (the frozen front computed once,
a frozen backbone's features read back). Throughput is the training images of an
epoch over the median epoch time after the first (which pays for compilation and warmup),
with the epoch's validation pass (1/16 of the training images) included on both sides.

The fraction of the GPU's peak counts three times the forward FLOPs per training image
(forward, and a backward of twice that), measured with ``FlopCounterMode``, against the
dense bf16 peak of :data:`PEAK_TFLOPS` or ``--peak-tflops``.

Run on a GPU (several minutes, most of them compiling)::

    python bench/gpu.py

and on a CPU, as CI does, with a tiny model and a few steps::

    python bench/gpu.py --quick
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import timm
import torch
from common import EpochClock, median, minimal_fit, publish, section_preamble, table
from fast_trials import one_trial
from safetensors.torch import save_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from automl_transfer.data.prepare import LabelledTensors, PreparedData
from automl_transfer.registry import load_plugins
from automl_transfer.training.devices import resolve_device
from automl_transfer.training.params import TrialParams
from automl_transfer.training.trial import run_trial

#: Dense bf16 tensor-core peaks in TFLOP/s; the first name contained in the GPU's name wins.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
)
NUM_CLASSES = 100
LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
WARMUP_EPOCHS = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps, on the CPU: proves the script works")
    parser.add_argument("--models", help="timm model names, comma-separated (default resnet50,vit_small_patch16_224)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default 224; 32 with --quick)")
    parser.add_argument("--train-images", type=int, help="synthetic training images per epoch (default 4096)")
    parser.add_argument("--batch-size", type=int, help="images per step (default 256)")
    parser.add_argument("--epochs", type=int, help="epochs per run; the first is not timed (default 4)")
    parser.add_argument("--repeats", type=int, help="interleaved runs of each variant; the median is kept (default 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--no-caches", action="store_true", help="skip the trials with and without the caches")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto; cpu with --quick)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for unlisted GPUs")
    parser.add_argument(
        "--results", type=Path, help="results file to update (default bench/RESULTS.md; not written by --quick)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "models": "test_resnet" if quick else "resnet50,vit_small_patch16_224",
        "image_size": 32 if quick else 224,
        "train_images": 64 if quick else 4096,
        "batch_size": 16 if quick else 256,
        "epochs": 3 if quick else 4,
        "repeats": 1 if quick else 2,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick and args.device == "auto":
        args.device = "cpu"
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    return args


def synthetic_data(train_images: int, image_size: int, seed: int = 0) -> PreparedData:
    """Return random uint8 images with random labels, 1/16 of them as a validation split."""
    generator = torch.Generator().manual_seed(seed)
    val_images = max(NUM_CLASSES // 4, train_images // 16)

    def split(count: int) -> LabelledTensors:
        images = torch.randint(0, 256, (count, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
        return LabelledTensors(images, torch.randint(0, NUM_CLASSES, (count,), generator=generator))

    return PreparedData(
        class_names=[str(index) for index in range(NUM_CLASSES)],
        train=split(train_images),
        val=split(val_images),
        test=None,
        n_skipped=0,
        fingerprint=f"synthetic-{train_images}-{image_size}-{seed}",
    )


def forward_flops_per_image(model_name: str, image_size: int) -> float:
    """Count the FLOPs of one forward pass of ``model_name`` on one image (multiply-add = 2).

    Attention runs on PyTorch's math backend while counting: its matrix products are
    counted on every device, where the CPU's fused kernel would be missed.
    """
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES).eval()
    images = torch.zeros(2, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
        model(images)
    return counter.get_total_flops() / len(images)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """Return the device's dense bf16 peak in TFLOP/s: ``override``, the table's, or ``None``."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def run_ours(model_name: str, data: PreparedData, args: argparse.Namespace, device: torch.device, compiled: bool) -> float:
    """Train one trial through ``run_trial``; return its steady seconds per epoch."""
    params = {
        "source": f"timm:{model_name}@none",
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
        "interpolation": "bilinear",
        "extra": {},
    }
    clock = EpochClock(device)
    run_trial(TrialParams.from_dict(params), lambda size, interpolation: data, device, clock, compile_model=compiled)
    return clock.steady_seconds_per_epoch()


def run_minimal(
    model_name: str, data: PreparedData, args: argparse.Namespace, device: torch.device, compiled: bool
) -> float:
    """Train the same model with :func:`common.minimal_fit`; return its steady seconds per epoch."""
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES)
    config = timm.data.resolve_data_config({}, model=model)
    clock = EpochClock(device)
    minimal_fit(
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
        compile_model=compiled,
        on_epoch=clock,
    )
    return clock.steady_seconds_per_epoch()


def main(argv: list[str] | None = None) -> int:
    """Measure every model and variant, print the table and update the results file."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    load_plugins()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    data = synthetic_data(args.train_images, args.image_size)
    peak = peak_tflops(device, args.peak_tflops)
    compile_modes = [False] if args.no_compile or device.type != "cuda" else [False, True]
    rows = []
    for model_name in args.models.split(","):
        flops = forward_flops_per_image(model_name, args.image_size)
        for compiled in compile_modes:
            seconds: dict[str, list[float]] = {"trial": [], "minimal": []}
            for repeat in range(args.repeats):
                order = ("trial", "minimal") if repeat % 2 == 0 else ("minimal", "trial")
                for variant in order:
                    runner = run_ours if variant == "trial" else run_minimal
                    seconds[variant].append(runner(model_name, data, args, device, compiled))
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            throughput = {variant: args.train_images / median(values) for variant, values in seconds.items()}
            row = [
                model_name,
                "yes" if compiled else "no",
                f"{throughput['trial']:.1f}",
                f"{throughput['minimal']:.1f}",
                f"{throughput['trial'] / throughput['minimal']:.3f}",
                f"{3 * flops / 1e9:.3g}",
            ]
            for variant in ("trial", "minimal"):
                achieved = throughput[variant] * 3 * flops
                row.append(f"{achieved / (peak * 1e12):.1%}" if peak else "n/a")
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = [
        "model",
        "compiled",
        "trial img/s",
        "minimal img/s",
        "trial / minimal",
        "train GFLOP/img",
        "trial % of peak",
        "minimal % of peak",
    ]
    peak_text = f"{peak:g} TFLOP/s dense bf16" if peak else "unknown (pass --peak-tflops)"
    body = (
        section_preamble("GPU throughput (bench/gpu.py)", device)
        + f"- setup: synthetic data, {args.train_images} training images of {args.image_size} px per epoch, "
        f"batch {args.batch_size}, {args.epochs} epochs (first untimed), median of {args.repeats} interleaved runs, "
        f"random init, {'bf16 autocast + channels-last' if device.type == 'cuda' else 'fp32'}; peak {peak_text}\n\n"
        + table(header, rows)
        + "\n"
    )
    if not args.no_caches:
        body += "\n" + cache_rows(args.models.split(",")[0], data, args, device)
    publish("gpu", body, args.quick, args.results)
    return 0


def cache_rows(model_name: str, data: PreparedData, args: argparse.Namespace, device: torch.device) -> str:
    """Time trials at freeze depth 0, 0.5 and 1 with and without the caches (see bench/fast_trials.py)."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"{model_name}.safetensors"
        save_file(timm.create_model(model_name, num_classes=0).state_dict(), checkpoint)
        source = f"timm:{model_name}@{checkpoint}"
        one_trial(data, source, 1.0, "with", Path(folder), args.epochs, args.batch_size, device)  # fills the cache
        seconds = {
            (depth, variant): one_trial(data, source, depth, variant, Path(folder), args.epochs, args.batch_size, device)[0]
            for depth in (0.0, 0.5, 1.0)
            for variant in ("without", "with")
        }
    full = seconds[(0.0, "without")]
    rows = [[f"{depth:g}", variant, f"{value:.2f}", f"{full / value:.1f}x"] for (depth, variant), value in seconds.items()]
    return (
        f"Trial time with and without the caches ({model_name}, {args.epochs} epochs, one run each; a freeze-1 trial "
        "reads the features an earlier trial stored):\n\n"
        + table(["freeze depth", "caches", "seconds", "vs freeze 0"], rows)
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
