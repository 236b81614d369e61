"""The demo's settings and its command-line flags (cheap to import: the CLI builds its parser from them)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl_transfer.errors import AutoMLTransferError


@dataclass
class DemoSettings:
    """What the demo does; every field is also a flag of ``automl-transfer demo``.

    :param run_dir: where the search, best model, search space and sample images go.
    :param trials: trials of each search (transfer, and the from-scratch baseline).
    :param per_class: labelled crops per photograph (half train, half validation).
    :param target_epochs: epochs of each search trial (at most: early stopping and Hyperband end some sooner).
    :param image_size: side of the square images, in pixels.
    :param seed: seeds the data split, the sampler and training.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param samples: held-out images to classify at the end.
    :param fresh: discard a search already in ``run_dir`` and search again.
    :param quiet: no per-trial lines.
    """

    run_dir: Path = Path("runs/demo")
    trials: int = 5
    per_class: int = 10
    target_epochs: int = 10
    image_size: int = 64
    seed: int = 0
    device: str = "auto"
    samples: int = 6
    fresh: bool = False
    quiet: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        """Return settings for a run of well under a minute (for tests): few epochs and trials."""
        values = {"trials": 2, "target_epochs": 2, "samples": 3}
        values.update(overrides)
        return cls(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's flags to ``parser`` (defaults from :class:`DemoSettings`)."""
    defaults = DemoSettings()
    parser.add_argument(
        "--run-dir", type=Path, default=defaults.run_dir, help=f"run directory (default {defaults.run_dir})"
    )
    parser.add_argument("--trials", type=int, help=f"search trials (default {defaults.trials})")
    parser.add_argument(
        "--per-class",
        type=int,
        default=defaults.per_class,
        help=f"labelled crops per photograph, half for validation (default {defaults.per_class})",
    )
    parser.add_argument("--target-epochs", type=int, help=f"epochs per search trial (default {defaults.target_epochs})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default {defaults.seed})")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--fresh", action="store_true", help="discard the search already in the run dir")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument("--quick", action="store_true", help="a run of well under a minute: few epochs and trials")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """Build :class:`DemoSettings` from parsed flags; ``--quick`` changes the defaults, flags still win.

    :raises AutoMLTransferError: a count that is not positive.
    """
    chosen = {
        "run_dir": args.run_dir,
        "per_class": args.per_class,
        "seed": args.seed,
        "device": args.device,
        "fresh": args.fresh,
        "quiet": args.quiet,
    }
    for name in ("trials", "target_epochs"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    for name in ("trials", "per_class", "target_epochs"):
        if name in chosen and chosen[name] < 1:
            raise AutoMLTransferError(f"--{name.replace('_', '-')} must be at least 1, not {chosen[name]}")
    if chosen["per_class"] < 2:
        raise AutoMLTransferError("--per-class must be at least 2: half of the images are kept for validation")
    return DemoSettings.quick(**chosen) if args.quick else DemoSettings(**chosen)
