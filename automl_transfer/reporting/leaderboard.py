"""The leaderboard: the best trials of a study with every parameter that varied between them.

Used by the console observer at the end of a search and by ``automl-transfer report``. Trials
are ranked by the rule that picks ``best/``: the value, then (on a tie) the lower validation
loss, which is shown; the trial whose model is in ``best/`` is ranked first among its equals
and marked ``*``. After a cross-check of the finalists, they come first, by their mean fold
score, which is shown with its spread. ``epochs`` is how many epochs a trial trained (early stopping and pruning
end trials before the space's ``epochs``). A parameter appears as a column when it took more than one value among the study's finished
trials (head parameters as ``<head>.<parameter>``, plugin settings as ``extra.<name>``). The
table fits the console it is printed on: when its columns would not fit unwrapped, each trial
becomes a block of ``parameter: value`` lines (the parameters it has) instead of a table whose
headers wrap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, ConsoleRenderable, Group
from rich.table import Table
from rich.text import Text

from automl_transfer.search.counting import trial_counts
from automl_transfer.search.finalists import cross_check_record
from automl_transfer.search.summary import best_trial

if TYPE_CHECKING:
    import optuna

#: Parameters shown first, in this order, when they vary; the others follow by name.
FIRST_PARAMS = ("source", "freeze_depth", "lr", "weight_decay", "l2sp", "head")
#: Parameters a trial records that are never columns: they follow from the others.
DERIVED_PARAMS = ("interpolation",)
#: The cell of a parameter a trial does not have (the parameters of a head it did not choose).
MISSING = "-"
#: A width no table reaches, to measure the width a table needs without wrapping.
UNLIMITED_WIDTH = 100_000


def flat_params(params: dict[str, Any]) -> dict[str, Any]:
    """Flatten a trial's ``params`` user attr: ``head_params`` become ``<head>.<name>``, ``extra`` ``extra.<name>``."""
    flat = {}
    for key, value in params.items():
        if key == "head_params":
            flat.update({f"{params.get('head', 'head')}.{name}": item for name, item in value.items()})
        elif key == "extra":
            flat.update({f"extra.{name}": item for name, item in value.items()})
        elif key not in DERIVED_PARAMS:
            flat[key] = value
    return flat


def varying_params(trials: list[FrozenTrial]) -> list[str]:
    """Return the parameter names that took more than one value among ``trials``, in display order."""
    values: dict[str, set[str]] = {}
    for trial in trials:
        for key, value in flat_params(trial.user_attrs.get("params", trial.params)).items():
            values.setdefault(key, set()).add(repr(value))
    names = [name for name, seen in values.items() if len(seen) > 1 or _missing_somewhere(name, trials)]
    first = [name for name in FIRST_PARAMS if name in names]
    return first + sorted(name for name in names if name not in first)


def leaderboard(
    study: optuna.Study, metric: str, console: Console, limit: int = 10, run_dir: Path | None = None
) -> ConsoleRenderable:
    """Build the leaderboard of ``study`` for ``console``: a table, or blocks when it is too narrow.

    :param metric: the objective's name, for the value column.
    :param console: where it will be printed (its width decides the layout).
    :param limit: how many complete trials to list, best first.
    :param run_dir: the run directory, whose ``best/`` says which of equally good trials was kept.
    :returns: a rich renderable ending with the counts of pruned, failed and lost trials.
    """
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    completed = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    kept = best_trial(study, run_dir) if run_dir is not None else None  # without best/, Optuna's pick is no rule
    kept_number = None if kept is None else kept.number
    record = cross_check_record(study)
    cross_checked = {entry["trial"]: entry for entry in record["finalists"]} if record else {}
    ranked = ranked_trials(
        completed, study.direction.name == "MAXIMIZE", kept_number,
        {number: entry["mean"] for number, entry in cross_checked.items()},
    )[:limit]
    columns = varying_params(finished or completed)
    with_loss = metric != "loss"  # the loss is the value itself
    rows = [
        _row(rank, trial, columns, trial.number == kept_number, with_loss, cross_checked if record else None)
        for rank, trial in enumerate(ranked, start=1)
    ]
    cross_header = [f"{record['folds']}-fold mean ± sd"] if record else []
    headers = ["rank", "trial", metric, *(["val_loss"] if with_loss else []), *cross_header, *columns, "epochs"]
    caption = _caption(study) + ("; * its model is in best/" if kept is not None else "")
    if record:
        caption += f"; the {len(cross_checked)} finalists rank by their {record['folds']}-fold cross-validation mean"
    table = Table(title=f"Leaderboard ({metric})", caption=caption)
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # Measured without the console's width limit: measured within it, a table always "fits".
    if console.measure(table, options=console.options.update_width(UNLIMITED_WIDTH)).maximum <= console.width:
        return table
    blocks: list[ConsoleRenderable] = [Text(f"Leaderboard ({metric})", style="bold")]
    for row in rows:
        blocks.append(Text(f"#{row[0]}  trial {row[1]}  {metric} {row[2]}", style="bold"))
        blocks.extend(
            Text(f"  {name}: {value}", overflow="fold")
            for name, value in zip(headers[3:], row[3:])
            if value != MISSING  # another head's parameters
        )
    blocks.append(Text(caption))
    return Group(*blocks)


def wide_console() -> Console:
    """Return a stdout console; when stdout is not a terminal, wide enough for the leaderboard."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def format_value(value: Any) -> str:
    """Format a parameter value for a table cell: floats to 3 significant digits, weight files by name."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str) and "@" in value and "/" in value.rpartition("@")[2]:
        model, _, weights = value.rpartition("@")
        return f"{model}@…/{Path(weights).name}"  # a weight file's folder would crowd the table
    return str(value)


def ranked_trials(
    completed: list[FrozenTrial], maximize: bool, kept: int | None, cross_checked: dict[int, float] | None = None
) -> list[FrozenTrial]:
    """Order complete trials as the search picks ``best/``: by value, then the lower validation loss.

    :param kept: the number of the trial whose model is in ``best/``: first among trials of its value (equal
        losses are settled by which was saved first, which only ``best/`` records).
    :param cross_checked: the finalists' mean fold scores, by trial number: they come first, by that mean.
    :returns: the trials, best first; trials without a validation loss come after those with one.
    """
    means = cross_checked or {}

    def key(trial: FrozenTrial) -> tuple[bool, float, bool, float, int]:
        loss = trial.user_attrs.get("metrics", {}).get("val_loss")
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        score = means.get(trial.number, trial.value)
        return (
            trial.number not in means, -score if maximize else score, trial.number != kept,
            loss if finite else math.inf, trial.number,
        )

    return sorted(completed, key=key)


def epochs_trained(trial: FrozenTrial) -> int:
    """Return how many epochs ``trial`` trained: one ``epoch_N`` user attr is recorded per epoch."""
    return sum(key.startswith("epoch_") for key in trial.user_attrs)


def _row(
    rank: int, trial: FrozenTrial, columns: list[str], kept: bool, with_loss: bool,
    cross_checked: dict[int, dict[str, Any]] | None,
) -> list[str]:
    params = flat_params(trial.user_attrs.get("params", trial.params))
    loss = trial.user_attrs.get("metrics", {}).get("val_loss")
    entry = (cross_checked or {}).get(trial.number)
    cross_cell = MISSING if entry is None else f"{entry['mean']:.4f} ± {entry['spread']:.4f}"
    return [
        str(rank),
        f"{trial.number} *" if kept else str(trial.number),
        f"{trial.value:.4f}",
        *([f"{loss:.4f}" if isinstance(loss, (int, float)) else MISSING] if with_loss else []),
        *([cross_cell] if cross_checked is not None else []),
        *(format_value(params.get(name, MISSING)) for name in columns),
        str(epochs_trained(trial)),
    ]


def _caption(study: optuna.Study) -> str:
    counts = trial_counts(study)
    caption = f"{counts['n_pruned']} pruned, {counts['n_failed']} failed"
    if counts["n_replaced"]:
        caption += f", {counts['n_replaced']} lost and run again"
    return caption


def _missing_somewhere(name: str, trials: list[FrozenTrial]) -> bool:
    """Whether some trial lacks ``name`` while another has it (a head's parameter, say)."""
    present = [name in flat_params(trial.user_attrs.get("params", trial.params)) for trial in trials]
    return any(present) and not all(present)
