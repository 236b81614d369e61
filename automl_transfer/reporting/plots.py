"""The report's plots, as offline HTML, and the parameter importances.

Every plot speaks the search's language: axes are titled with the metric, ``trial`` and
``epoch``, and every line or point says which trial and source it is. The files load
``plotly.min.js`` from their own folder, so they open without a network:

- ``history.html``: each complete trial's value and the best so far, by trial number
  (Optuna's history plot, retitled);
- ``epochs.html``: the validation metric after each epoch of every trial, one line per trial,
  coloured by source and named ``trial N · SOURCE`` in the legend; pruned trials dotted;
- ``importances.html``: Optuna's parameter importances for the metric, of the parameters that
  varied, from :data:`MIN_IMPORTANCE_TRIALS` complete trials on (see :func:`importance_params`);
- ``confusion.html``: the final best model's confusion matrix on held-out images, when
  ``summary.json`` holds one (``search --test``, or a dataset with a test split).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from rich.table import Table

from automl_transfer.reporting.leaderboard import format_value

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: The fewest complete trials before parameter importances are shown. Optuna's evaluator (fANOVA)
#: fits a random forest to the complete trials; the first few are the space's start points,
#: recipes chosen rather than sampled, that change several settings at once, so on fewer trials
#: the forest mostly reports which settings those few trials happened to differ in.
MIN_IMPORTANCE_TRIALS = 10

#: Trial states whose epochs are drawn in ``epochs.html``.
DRAWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def write_plots(study: optuna.Study, out_dir: Path, metric: str, summary: dict[str, Any] | None = None) -> list[Path]:
    """Write the report's plots as HTML files into ``out_dir``.

    :param metric: the objective's name (``accuracy``, ``macro_f1``, ``loss``), for axis titles.
    :param summary: the run's ``summary.json`` content; its ``test`` entry gives the confusion matrix.
    :returns: the files written (importances need :data:`MIN_IMPORTANCE_TRIALS` complete trials and
        a parameter that varied, the confusion matrix a scored test set, so either may be missing).
    :raises OSError: ``out_dir`` cannot be created or written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"history.html": history_figure(study, metric), "epochs.html": epochs_figure(study, metric)}
    if importance_params(study):
        figures["importances.html"] = importances_figure(study, metric)
    if summary and summary.get("test"):
        figures["confusion.html"] = confusion_figure(summary["test"])
    written = []
    for name, figure in figures.items():
        path = out_dir / name
        figure.write_html(path, include_plotlyjs="directory")
        written.append(path)
    return written


def history_figure(study: optuna.Study, metric: str) -> go.Figure:
    """Optuna's optimisation history with the metric and ``trial`` as axis titles."""
    from optuna import visualization

    figure = visualization.plot_optimization_history(study, target_name=metric)
    figure.for_each_trace(lambda trace: trace.update(name="best so far") if trace.name == "Best Value" else None)
    figure.update_layout(title=f"Validation {metric} by trial", xaxis_title="trial", yaxis_title=f"validation {metric}")
    figure.update_xaxes(dtick=1)
    return figure


def epochs_figure(study: optuna.Study, metric: str) -> go.Figure:
    """One line per trial: the validation metric after each epoch, coloured by source."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    colours: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False, states=DRAWN_STATES):
        if not trial.intermediate_values:
            continue
        source = format_value(trial.user_attrs.get("params", {}).get("source", "?"))
        colour = colours.setdefault(source, qualitative.Plotly[len(colours) % len(qualitative.Plotly)])
        epochs = sorted(trial.intermediate_values)
        state = "" if trial.state == TrialState.COMPLETE else f" ({trial.state.name.lower()})"
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=[trial.intermediate_values[epoch] for epoch in epochs],
                mode="lines+markers",
                name=f"trial {trial.number} · {source}{state}",
                legendgroup=source,
                line={"color": colour, "dash": "solid" if trial.state == TrialState.COMPLETE else "dot"},
            )
        )
    figure.update_layout(
        title=f"Validation {metric} after each epoch",
        xaxis_title="epoch",
        yaxis_title=f"validation {metric}",
        legend_title_text="trial · source",
    )
    figure.update_xaxes(dtick=1)
    return figure


def importance_params(study: optuna.Study) -> list[str]:
    """Return the parameters whose importance means something: those that varied among the complete trials.

    :returns: the Optuna parameters that took more than one value and that every complete trial
        has (a head's parameters only when every trial chose that head); none with fewer than
        :data:`MIN_IMPORTANCE_TRIALS` complete trials.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < MIN_IMPORTANCE_TRIALS:
        return []
    values: dict[str, set[str]] = {}
    for trial in completed:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    return [name for name, seen in values.items() if len(seen) > 1 and all(name in t.params for t in completed)]


def importances_figure(study: optuna.Study, metric: str) -> go.Figure:
    """Optuna's parameter importances for the metric (of :func:`importance_params`), with readable axis titles."""
    from optuna import visualization

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optuna warns of rarely sampled regimes on small studies
        figure = visualization.plot_param_importances(study, params=importance_params(study), target_name=metric)
    figure.update_layout(
        title=f"How much each parameter mattered for validation {metric}",
        xaxis_title=f"importance for validation {metric} (sums to 1)",
        yaxis_title="parameter",
    )
    return figure


def confusion_figure(evaluation: dict[str, Any]) -> go.Figure:
    """The confusion matrix of an evaluation (``summary.json``'s ``test``) as an annotated heatmap."""
    import plotly.graph_objects as go

    names = list(evaluation["class_names"])
    counts = evaluation["confusion_matrix"]
    figure = go.Figure(
        go.Heatmap(
            z=counts,
            x=names,
            y=names,
            text=[[str(count) for count in row] for row in counts],
            texttemplate="%{text}",
            colorscale="Blues",
            colorbar={"title": {"text": "images"}},
            hovertemplate="true %{y}, predicted %{x}: %{z} images<extra></extra>",
        )
    )
    where = "test split" if evaluation["split"] == "test" else "all images"
    figure.update_layout(
        title=f"Confusion matrix of the best model (trial {evaluation.get('trial')}) on the {where} of "
        f"{evaluation['dataset']}: accuracy {evaluation['accuracy']:.4f}",
        xaxis_title="predicted class",
        yaxis_title="true class",
    )
    figure.update_xaxes(type="category", side="bottom")
    figure.update_yaxes(type="category", autorange="reversed")
    return figure


def importance_table(study: optuna.Study) -> Table | None:
    """Return optuna's importances of :func:`importance_params` as a table, or ``None`` when there are none."""
    names = importance_params(study)
    if not names:
        return None
    table = Table(title="Parameter importances")
    table.add_column("parameter")
    table.add_column("importance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optuna warns of rarely sampled regimes on small studies
        importances = optuna.importance.get_param_importances(study, params=names)
    for name, importance in importances.items():
        table.add_row(name, f"{importance:.3f}")
    return table
