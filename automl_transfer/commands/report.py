"""``automl-transfer report``: the leaderboard, parameter importances and plots of a search."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The folder of the run dir the plots are written to.
REPORT_DIR = "report"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand."""
    parser = subparsers.add_parser("report", help="leaderboard, parameter importances and plots of a search")
    parser.add_argument("run_dir", type=Path, help="the search's run directory")
    parser.add_argument("--study", help="study name, when the storage holds several")
    parser.add_argument("--storage", help="RDB storage URL, when the search did not use the run dir's journal")
    parser.add_argument("--top", type=int, default=10, help="rows of the leaderboard (default 10)")
    parser.add_argument("--plots", type=Path, help=f"folder for the HTML plots (default RUN_DIR/{REPORT_DIR})")


def run(args: argparse.Namespace) -> int:
    """Print the report and write the plots into ``--plots`` (default ``RUN_DIR/report``).

    The run dir is only read (a read-only one is fine) unless the plots go into it.

    :raises AutoMLTransferError: no search in the run dir, an unreachable storage, or a plots
        folder that cannot be written (after the leaderboard was printed).
    """
    import json

    import optuna

    from automl_transfer.errors import RunDirError
    from automl_transfer.reporting.evaluation import score_line
    from automl_transfer.reporting.leaderboard import leaderboard, wide_console
    from automl_transfer.reporting.plots import (
        MIN_IMPORTANCE_TRIALS,
        importance_table,
        write_plots,
    )
    from automl_transfer.reporting.sources import source_table
    from automl_transfer.search.record import recorded_identity, recorded_ranking
    from automl_transfer.storage.backends import open_run_storage, pick_study
    from automl_transfer.storage.run_dir import SUMMARY_NAME

    storage = open_run_storage(args.run_dir, args.storage, read_only=True)
    name = pick_study(storage, args.study, args.run_dir)
    study = optuna.load_study(study_name=name, storage=storage)
    metric = recorded_identity(study).get("metric", "value")
    console = wide_console()
    console.print(leaderboard(study, metric, console, limit=args.top, run_dir=args.run_dir))
    ranking = recorded_ranking(study)
    if ranking:
        console.print(source_table(study, ranking, metric))
    importances = importance_table(study)
    if importances is not None:
        console.print(importances)
    else:
        console.print(f"Parameter importances: none yet; they need {MIN_IMPORTANCE_TRIALS} complete trials and a "
                      "parameter that varied between them", highlight=False, soft_wrap=True)
    summary_path = args.run_dir / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if summary and summary.get("test"):
        console.print(f"Held-out images: {score_line(summary['test'])}", highlight=False, soft_wrap=True)
    plots = args.plots or args.run_dir / REPORT_DIR
    try:
        written = write_plots(study, plots, metric, summary)
    except OSError as error:
        raise RunDirError(
            f"cannot write the plots into {plots}: {error.strerror or error}; pass --plots DIR to write them elsewhere"
        ) from None
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    return 0
