"""The report's plots (Optuna's visualisations, as offline HTML) and the parameter importances."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.table import Table


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write optuna's history, importance and intermediate-value plots as HTML files.

    :returns: the files written (importances need two complete trials, so may be missing).
    :raises OSError: ``out_dir`` cannot be created or written.
    """
    from optuna import visualization

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"history.html": visualization.plot_optimization_history, "intermediate.html": visualization.plot_intermediate_values}
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        plots["importances.html"] = visualization.plot_param_importances
    written = []
    for name, plot in plots.items():
        path = out_dir / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # optuna warns of rarely sampled regimes on small studies
            figure = plot(study)
        figure.write_html(path, include_plotlyjs="directory")
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
