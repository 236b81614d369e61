"""``automl-transfer rank``: rank a space's sources by transferability before fine-tuning any of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from automl_transfer.search.config import SearchConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``rank`` subcommand and its flags."""
    parser = subparsers.add_parser(
        "rank",
        help="rank the space's sources by how well their frozen features suit the dataset",
        description=(
            "For every source of the space, compute its frozen pooled features of the training images, then "
            "LogME and a kNN validation accuracy, and print the sources by combined rank. A search orders its start "
            "points by this rank only when the two estimators agree on every pair of sources. The features stay in "
            "the run dir's cache, where a search of the same dataset and space reuses them."
        ),
    )
    parser.add_argument("--dataset", required=True, help="PLUGIN[:LOCATION], as for search")
    parser.add_argument("--space", required=True, help="search-space preset or YAML path, as for search")
    parser.add_argument("--json", action="store_true", help='print {"sources": [{"source", "logme", "knn_accuracy", '
                        '"rank", "seconds"}], "estimators_agree": BOOL}')
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--run-dir", type=Path, help="where the cache goes (default runs/<study>, as for search)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="validation share when the dataset has none (0.2)")


def run(args: argparse.Namespace) -> int:
    """Rank the sources and print them; return 0.

    :raises AutoMLTransferError: bad dataset, space, source, device or run dir.
    """
    from automl_transfer.search.search import TransferSearch

    config = SearchConfig(
        dataset=args.dataset, space=args.space, run_dir=args.run_dir, device=args.device, seed=args.seed,
        val_fraction=args.val_fraction, quiet=True,
    )
    from automl_transfer.ranking.rank import agreed_order

    scores = TransferSearch(config).rank()
    agree = agreed_order(scores) is not None
    if args.json:
        print(json.dumps({"sources": [score.to_dict() for score in scores], "estimators_agree": agree}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Sources ranked for {args.dataset}", caption="random weights (@none) have no score: ranked last")
    for column in ("rank", "source", "LogME", "kNN accuracy", "seconds"):
        table.add_column(column, overflow="fold")
    for score in scores:
        table.add_row(
            str(score.rank),
            score.source,
            "-" if score.logme is None else f"{score.logme:.4f}",
            "-" if score.knn_accuracy is None else f"{score.knn_accuracy:.4f}",
            f"{score.seconds:.2f}",
        )
    console = Console()
    console.print(table)
    if not agree:
        console.print(
            "LogME and the kNN accuracy order some sources differently, so this ranking is not evidence: "
            "a search keeps the space's order of sources for its start points.",
            highlight=False,
        )
    return 0
