"""Overhead: a whole one-trial search process against a minimal hand-written training script.

Both start a fresh Python process, read the same folder of real PNG images, hold out 20% of
every class, fine-tune timm's ``test_resnet`` from the same local checkpoint for 3 epochs at
batch 64 and 32 px without augmentation, validate after every epoch, and save the model. Ours
is ``automl-transfer search --trials 1 --no-refit``, in a new run dir each time (so it decodes
the images too); the yardstick is ``bench/minimal_train.py``, what a careful engineer writes by
hand. Runs alternate (ours, minimal, minimal, ours, ...) and the medians of the whole
processes' wall times are compared. Two cases:

``every setting fixed``
    scikit-learn's handwritten digits, three shifted copies of each (5,391 files, 10 classes)
    at 32 px; the space fixes every setting (``min_steps: 0``, ``patience: 0``).
``grey PNGs resized, defaults``
    5 classes of grey 28 px PNGs (digits 0-4, five shifted copies: about 4,500 files) resized
    to 32 px; the space names only the source, ``epochs``, ``batch_size``, ``image_size`` and
    ``augment``, leaving ``min_steps``, ``patience``, the learning rate's start point and the
    rest at their defaults, as a user writes it.

Goal: at most 1.10x in both cases.

Both do the same work, but not in the same order: on Linux with two or more cores, ours decodes
the images in a second process while it imports torch and builds the source
(:mod:`automl_transfer.data.ahead`); the script decodes after its imports, as hand-written
scripts do.

Our modules are compiled to bytecode first, as ``pip install`` does for an installed
package (an editable install under ``PYTHONDONTWRITEBYTECODE=1`` would compile some sixty
modules from source in every process; the yardstick is one file).

Run (about 5 to 10 minutes on 2 CPU cores)::

    python bench/overhead.py
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from common import median, publish, section_preamble, table
from PIL import Image
from safetensors.torch import save_file

BENCH = Path(__file__).resolve().parent
#: Each case's space; ``{checkpoint}`` and ``{epochs}`` are filled in.
SPACES = {
    "every setting fixed": """\
source: timm:test_resnet@{checkpoint}
freeze_depth: 0.0
lr: 3.0e-3
weight_decay: 0.05
head: linear
epochs: {epochs}
batch_size: 64
image_size: 32
augment: none
label_smoothing: 0.1
min_steps: 0
patience: 0
start: []
""",
    "grey PNGs resized, defaults": """\
source: timm:test_resnet@{checkpoint}
epochs: {epochs}
batch_size: 64
image_size: 32
augment: none
""",
}
#: Each case's images: the digits, the horizontal shifts of each, and the side of the PNG files.
IMAGES = {
    "every setting fixed": (range(10), (-1, 0, 1), 32),
    "grey PNGs resized, defaults": (range(5), (-2, -1, 0, 1, 2), 28),
}
GOAL = 1.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one copy of two digits, 1 epoch, no min_steps, 1 run: proves it works")
    parser.add_argument("--repeats", type=int, help="runs of each, alternated (default 7)")
    parser.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md; not written by --quick)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 7)
    args.epochs = 1 if args.quick else 3
    return args


def write_inputs(folder: Path, case: str, quick: bool) -> tuple[Path, Path]:
    """Write ``case``'s PNG folder and a checkpoint into ``folder``; return their paths."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    classes, shifts, side = IMAGES[case]
    images = folder / "digits"
    for shift in (0,) if quick else shifts:
        for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
            if label not in classes or (quick and label > 1):
                continue
            grey = np.roll(np.round(pixels * 255 / 16).astype(np.uint8), shift, axis=1)
            (images / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(grey, "L").resize((side, side), Image.Resampling.BICUBIC).save(images / str(label) / f"{shift}-{index}.png")
    checkpoint = folder / "test_resnet.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), checkpoint)
    return images, checkpoint


def timed(command: list[str], cwd: Path) -> float:
    """Run ``command`` to its end and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def compare(case: str, args: argparse.Namespace) -> dict[str, list[float] | int]:
    """Alternate ours and the yardstick on ``case``'s inputs; return every run's seconds and the image count."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        images, checkpoint = write_inputs(folder, case, args.quick)
        space = folder / "space.yaml"
        text = SPACES[case].format(checkpoint=checkpoint, epochs=args.epochs)
        if args.quick and "min_steps" not in text:  # seconds, not 40 passes over 360 images at min_steps 200
            text += "min_steps: 0\n"
        space.write_text(text)
        ours = [sys.executable, "-m", "automl_transfer", "search", "--dataset", f"imagefolder:{images}",
                "--space", str(space), "--trials", "1", "--no-refit", "--quiet", "--device", "cpu"]
        minimal = [sys.executable, str(BENCH / "minimal_train.py"), str(images), str(checkpoint)]
        seconds: dict[str, list[float] | int] = {"ours": [], "minimal": [], "images": sum(1 for _ in images.rglob("*.png"))}
        for repeat in range(args.repeats):
            order = ("ours", "minimal") if repeat % 2 == 0 else ("minimal", "ours")
            for name in order:
                run = folder / f"run-{name}-{repeat}"
                command = [*ours, "--run-dir", str(run)] if name == "ours" else [*minimal, f"{run}.safetensors", str(args.epochs)]
                seconds[name].append(timed(command, folder))
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Alternate the two processes on each case and publish the median wall times and their ratios."""
    args = parse_args(argv)
    compileall.compile_dir(BENCH.parent / "automl_transfer", quiet=1)
    compileall.compile_dir(BENCH.parent / "plugins", quiet=1)
    rows, runs = [], []
    for case in SPACES:
        seconds = compare(case, args)
        ours_s, minimal_s = median(seconds["ours"]), median(seconds["minimal"])
        rows.append([f"{case} ({seconds['images']} PNGs)", f"{ours_s:.2f}", f"{minimal_s:.2f}", f"**{ours_s / minimal_s:.3f}**"])
        runs.append(f"- {case}: ours " + ", ".join(f"{value:.2f}" for value in seconds["ours"])
                    + "; minimal " + ", ".join(f"{value:.2f}" for value in seconds["minimal"]))
    threads = os.environ.get("OMP_NUM_THREADS", f"torch's default ({torch.get_num_threads()})")
    markdown = (
        section_preamble("Overhead: a whole one-trial search vs a minimal training script (bench/overhead.py)", None)
        + f"- setup: PNG digits in class folders, timm `test_resnet` from a local checkpoint, {args.epochs} epochs, "
        "batch 64, 32 px, no augmentation, validation every epoch, model saved; ours is "
        "`automl-transfer search --trials 1 --no-refit`, the yardstick `bench/minimal_train.py`; whole processes, "
        f"median of {args.repeats} alternated runs each; CPU threads: {threads}; goal: ratio <= {GOAL:.2f} in each case\n\n"
        + table(["case", "ours s", "yardstick s", "ratio"], rows)
        + "\n\nEvery run, seconds:\n" + "\n".join(runs) + "\n"
    )
    publish("overhead-cpu", markdown, args.quick, args.results)


if __name__ == "__main__":
    main()
