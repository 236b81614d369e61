"""The leaderboard: the best trials of a study with every parameter that varied between them.

Used by the console observer at the end of a search and by ``automl-transfer report``. A
parameter appears as a column when it took more than one value among the study's finished
trials (head parameters as ``<head>.<parameter>``, plugin settings as ``extra.<name>``). The
table fits the console it is printed on: when its columns would not fit unwrapped, each trial
becomes a block of ``parameter: value`` lines (the parameters it has) instead of a table whose
headers wrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, ConsoleRenderable, Group
from rich.table import Table
from rich.text import Text

from automl_transfer.search.counting import trial_counts

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


def leaderboard(study: optuna.Study, metric: str, console: Console, limit: int = 10) -> ConsoleRenderable:
    """Build the leaderboard of ``study`` for ``console``: a table, or blocks when it is too narrow.

    :param metric: the objective's name, for the value column.
    :param console: where it will be printed (its width decides the layout).
    :param limit: how many complete trials to list, best first.
    :returns: a rich renderable ending with the counts of pruned, failed and lost trials.
    """
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    completed = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    reverse = study.direction.name == "MAXIMIZE"
    ranked = sorted(completed, key=lambda trial: trial.value, reverse=reverse)[:limit]
    columns = varying_params(finished or completed)
    rows = [_row(rank, trial, columns) for rank, trial in enumerate(ranked, start=1)]
    headers = ["rank", "trial", metric, *columns, "epochs"]
    caption = _caption(study)
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


def _row(rank: int, trial: FrozenTrial, columns: list[str]) -> list[str]:
    params = flat_params(trial.user_attrs.get("params", trial.params))
    return [
        str(rank),
        str(trial.number),
        f"{trial.value:.4f}",
        *(format_value(params.get(name, MISSING)) for name in columns),
        str(params.get("epochs", "")),
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
