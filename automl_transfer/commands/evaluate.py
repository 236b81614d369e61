"""``automl-transfer evaluate``: score a run's best model on a dataset's labelled images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from automl_transfer.commands.arguments import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score the best model of a search on a labelled dataset (accuracy, macro-F1, per class)",
        description=(
            "Score the run's best model on DATASET's test split, or on all its images when it has none "
            "(the output says which): accuracy, macro-F1, per-class precision and recall, the confusion matrix."
        ),
    )
    parser.add_argument("run_dir", type=Path, help="the search's run directory (or its best/ directory)")
    parser.add_argument("dataset", help="PLUGIN[:LOCATION], e.g. imagefolder:data/pets-test or csv:test.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip and count unreadable images")


def run(args: argparse.Namespace) -> int:
    """Score the model and print the result.

    :returns: 0.
    :raises AutoMLTransferError: no best model, an unusable dataset, a class the model does
        not know, an unreadable image (without ``--skip-bad-images``), a bad device.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from automl_transfer.data.datasets import read_dataset
    from automl_transfer.inference.predictor import load_model
    from automl_transfer.inference.scoring import score_model
    from automl_transfer.reporting.evaluation import evaluation_report
    from automl_transfer.reporting.leaderboard import wide_console

    model = load_model(args.run_dir, device=args.device)
    dataset = read_dataset(args.dataset, min_classes=1)  # scoring one kind of item is a real use
    stderr = Console(stderr=True)
    columns = (TextColumn("scoring images"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        task = bar.add_task("scoring", total=None)
        evaluation = score_model(
            model,
            dataset,
            batch_size=args.batch_size,
            skip_bad_images=args.skip_bad_images,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if args.json:
        print(json.dumps(evaluation.to_dict()))
    else:
        console = wide_console()
        console.print(evaluation_report(evaluation.to_dict(), console))
    return 0
