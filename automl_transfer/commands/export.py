"""``automl-transfer export``: write a run's best model as ONNX or TorchScript, preprocessing beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The ``--format`` values (see :data:`automl_transfer.inference.export.FORMATS`).
FORMAT_CHOICES = ("onnx", "torchscript")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="write the best model of a search as ONNX or TorchScript, with its preprocessing",
        description=(
            "Write the run's best model as an ONNX or TorchScript file taking float32 RGB images (batch, 3, S, S) "
            "in [0, 1] and returning logits, and PATH.json beside it with the preprocessing and class names."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory")
    parser.add_argument("--format", required=True, choices=FORMAT_CHOICES, help="onnx or torchscript")
    parser.add_argument(
        "--output", type=Path, metavar="PATH", help="the model file (default RUN_DIR/export/model.onnx or model.pt)"
    )


def run(args: argparse.Namespace) -> int:
    """Export the model and say where it went.

    :returns: 0.
    :raises AutoMLTransferError: no best model, or the ONNX packages missing.
    """
    from automl_transfer.inference.export import export_model

    written = export_model(args.run_dir, args.format, args.output)
    print(f"wrote {written} and {written.name}.json (its preprocessing and class names)")
    return 0
