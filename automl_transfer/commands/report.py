"""``automl-transfer report``: the leaderboard, parameter importances and plots of a search."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.table import Table

from automl_transfer.errors import RunDirError
from automl_transfer.progress import leaderboard_table, wide_console
from automl_transfer.run_dir import JOURNAL_NAME, open_storage

REPORT_DIR = "report"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand."""
    parser = subparsers.add_parser("report", help="leaderboard, parameter importances and plots of a search")
    parser.add_argument("run_dir", type=Path, help="the search's run directory")
    parser.add_argument("--study", help="study name, when the storage holds several")
    parser.add_argument("--storage", help="RDB storage URL, when the search did not use the run dir's journal")
    parser.add_argument("--top", type=int, default=10, help="rows of the leaderboard (default 10)")


def open_study(run_dir: Path, study_name: str | None = None, storage_url: str | None = None) -> optuna.Study:
    """Open the study a search left in ``run_dir`` (or in ``storage_url``).

    :raises RunDirError: no study there, or several and no ``study_name``.
    """
    if storage_url is None and not (run_dir / JOURNAL_NAME).is_file():
        raise RunDirError(f"{run_dir} holds no search (no {JOURNAL_NAME}); run `automl-transfer search --run-dir {run_dir} ...` first")
    storage = open_storage(run_dir, storage_url)
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise RunDirError(f"{run_dir} holds {len(names)} studies ({', '.join(names)}); choose one with --study")
        study_name = names[0]
    if study_name not in names:
        raise RunDirError(f"no study {study_name!r} in {run_dir}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write optuna's history, importance and intermediate-value plots as HTML files.

    :returns: the files written (importances need two complete trials, so may be missing).
    """
    from optuna import visualization

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"history.html": visualization.plot_optimization_history, "intermediate.html": visualization.plot_intermediate_values}
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        plots["importances.html"] = visualization.plot_param_importances
    written = []
    for name, plot in plots.items():
        path = out_dir / name
        plot(study).write_html(path, include_plotlyjs="directory")
        written.append(path)
    return written


def importance_table(study: optuna.Study) -> Table | None:
    """Return optuna's parameter importances as a table, or ``None`` with fewer than two complete trials."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    table = Table(title="Parameter importances")
    table.add_column("parameter")
    table.add_column("importance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optuna warns of rarely sampled regimes on small studies
        importances = optuna.importance.get_param_importances(study)
    for name, importance in importances.items():
        table.add_row(name, f"{importance:.3f}")
    return table


def run(args: argparse.Namespace) -> int:
    """Print the report and write the plots into ``RUN_DIR/report``."""
    study = open_study(args.run_dir, args.study, args.storage)
    metric = study.user_attrs.get("automl_transfer", {}).get("metric", "value")
    console = wide_console()
    console.print(leaderboard_table(study, metric, limit=args.top))
    importances = importance_table(study)
    if importances is not None:
        console.print(importances)
    for path in write_plots(study, args.run_dir / REPORT_DIR):
        console.print(f"wrote {path}", highlight=False)
    return 0
