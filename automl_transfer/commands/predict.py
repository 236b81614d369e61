"""``automl-transfer predict``: classify images with the best model of a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="classify images with the best model of a search",
        description=(
            "Print one line per image: PATH<TAB>LABEL<TAB>SCORE, or with --json one JSON object "
            '{"path", "label", "score"} per line. Folders are searched recursively for image files.'
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory (or its best/ directory)")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or folders of them")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass (default 64)")


def run(args: argparse.Namespace) -> int:
    """Classify ``args.images`` with the best model in ``args.run_dir`` and print the results.

    :returns: 0.
    :raises AutoMLTransferError: no best model, a missing or unreadable image, a bad device.
    """
    from automl_transfer.inference.predictor import load_model

    model = load_model(args.run_dir, device=args.device)
    for prediction in model.predict(args.images, batch_size=args.batch_size):
        if args.json:
            print(json.dumps({"path": prediction.path, "label": prediction.label, "score": prediction.score}))
        else:
            print(f"{prediction.path}\t{prediction.label}\t{prediction.score:.4f}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
