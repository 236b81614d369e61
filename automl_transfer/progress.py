"""What a search shows while it runs: a progress bar, a line per trial, a leaderboard at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from automl_transfer.run_dir import best_trial, trial_counts

#: The parameters a leaderboard shows, in order, when a trial has them.
LEADERBOARD_PARAMS = ("source", "freeze_depth", "lr", "l2sp", "head")


class SearchProgress:
    """Draws the search's progress on stderr and its leaderboard on stdout.

    :param quiet: when true, only the final leaderboard is printed.
    :param metric: the objective's name, for headings.
    """

    def __init__(self, quiet: bool, metric: str):
        self.quiet = quiet
        self.metric = metric
        self.console = wide_console()
        self.status = Console(stderr=True)
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, total: int, done: int) -> None:
        """Show the bar at ``done`` of ``total`` trials (trials of earlier runs count)."""
        if self.quiet:
            return
        self._bar = Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.status,
            transient=True,
        )
        self._task = self._bar.add_task("", total=total, completed=done)
        self._bar.start()

    def trial_line(
        self, number: int, state: TrialState, value: float | None, reason: str | None, params: dict[str, Any]
    ) -> None:
        """Print one line for a finished trial."""
        if self.quiet:
            return
        outcome = f"{self.metric}={value:.4f}" if value is not None else state.name.lower()
        if reason:
            outcome += f" ({reason})"
        shown = ", ".join(f"{key}={_format(params[key])}" for key in LEADERBOARD_PARAMS if key in params)
        target = self._bar.console if self._bar else self.console
        target.print(f"trial {number}: {outcome}  [{shown}]", highlight=False, markup=False, soft_wrap=True)

    def advance(self, study: optuna.Study, number: int, direction: str) -> None:
        """Move the bar on by one trial and show the current best."""
        if self._bar is None:
            return
        best = best_trial(study)
        description = f"best {self.metric}={best.value:.4f} (trial {best.number})" if best else "no complete trial yet"
        self._bar.update(self._task, advance=1, description=description)

    def stop(self, study: optuna.Study, direction: str) -> None:
        """Remove the bar and print the leaderboard."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.console.print(leaderboard_table(study, self.metric))


def wide_console() -> Console:
    """Return a stdout console; when stdout is not a terminal, wide enough for the leaderboard."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 132))


def leaderboard_table(study: optuna.Study, metric: str, limit: int = 10) -> Table:
    """Build a table of the best ``limit`` complete trials, then counts of the others.

    :returns: a rich ``Table`` ready to print.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(completed, key=lambda trial: trial.value, reverse=reverse)[:limit]
    counts = trial_counts(study)
    caption = f"{counts['n_pruned']} pruned, {counts['n_failed']} failed"
    if counts["n_replaced"]:
        caption += f", {counts['n_replaced']} lost and run again"
    table = Table(title=f"Leaderboard ({metric})", caption=caption)
    for column in ("rank", "trial", metric, *LEADERBOARD_PARAMS, "epochs"):
        table.add_column(column, overflow="fold", min_width=24 if column == "source" else None)
    for rank, trial in enumerate(ranked, start=1):
        params = trial.user_attrs.get("params", trial.params)
        table.add_row(
            str(rank),
            str(trial.number),
            f"{trial.value:.4f}",
            *(_format(params.get(key, "")) for key in LEADERBOARD_PARAMS),
            str(params.get("epochs", "")),
        )
    return table


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str) and "@" in value and "/" in value.rpartition("@")[2]:
        model, _, weights = value.rpartition("@")
        return f"{model}@…/{Path(weights).name}"  # a weight file's folder would crowd the table
    return str(value)
