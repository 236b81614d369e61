"""The sources of a study: their transferability ranking beside the best result each reached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState
from rich.table import Table

from automl_transfer.reporting.leaderboard import format_value

if TYPE_CHECKING:
    import optuna


def source_table(study: optuna.Study, ranking: list[dict[str, Any]], metric: str) -> Table:
    """Build a table of every ranked source: its rank and scores, its best value and trial count.

    :param ranking: the study's recorded ranking (``[{"source", "logme", "knn_accuracy", "rank"}]``).
    :param metric: the objective's name, for the heading.
    """
    maximize = study.direction.name == "MAXIMIZE"
    best: dict[str, float] = {}
    tried: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        source = trial.user_attrs.get("params", {}).get("source")
        tried[source] = tried.get(source, 0) + 1
        if trial.state == TrialState.COMPLETE:
            current = best.get(source)
            if current is None or (trial.value > current if maximize else trial.value < current):
                best[source] = trial.value
    table = Table(title="Sources: transferability rank and best result", caption="random weights (@none) have no score")
    for column in ("rank", "source", "LogME", "kNN accuracy", f"best {metric}", "trials"):
        table.add_column(column, no_wrap=column != "source", overflow="fold")
    for entry in sorted(ranking, key=lambda item: item["rank"]):
        source = entry["source"]
        table.add_row(
            str(entry["rank"]),
            format_value(source),
            "-" if entry["logme"] is None else f"{entry['logme']:.4f}",
            "-" if entry["knn_accuracy"] is None else f"{entry['knn_accuracy']:.4f}",
            "-" if source not in best else f"{best[source]:.4f}",
            str(tried.get(source, 0)),
        )
    return table
