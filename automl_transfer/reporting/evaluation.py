"""A model's scores on labelled images, for people: the summary line, per-class table, confusion matrix.

Everything here reads the JSON-ready form of an evaluation
(:meth:`automl_transfer.inference.scoring.Evaluation.to_dict`), so the same code shows what
``automl-transfer evaluate`` just computed and what ``summary.json`` keeps under ``test``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleRenderable, Group
from rich.table import Table
from rich.text import Text

from automl_transfer.contract.class_names import printable
from automl_transfer.inference.scoring import describe_split
from automl_transfer.reporting.leaderboard import UNLIMITED_WIDTH


def score_line(evaluation: dict[str, Any]) -> str:
    """One line: ``test accuracy 0.9250, macro-F1 0.9231 on the test split of D (120 images)``."""
    where = describe_split(evaluation["dataset"], evaluation["split"], evaluation["n_images"])
    skipped = f", {evaluation['n_skipped']} unreadable images skipped" if evaluation.get("n_skipped") else ""
    trial = f" (model of trial {evaluation['trial']})" if evaluation.get("trial") is not None else ""
    return (
        f"accuracy {evaluation['accuracy']:.4f}, macro-F1 {evaluation['macro_f1']:.4f} "
        f"on {where}{skipped}{trial}"
    )


def evaluation_report(evaluation: dict[str, Any], console: Console) -> ConsoleRenderable:
    """Build the score line, the per-class table and, when it fits ``console``, the confusion matrix.

    :param evaluation: an evaluation's JSON-ready form.
    :param console: where it will be printed (its width decides whether the matrix is shown).
    """
    per_class = Table(title="Per class")
    for header in ("class", "precision", "recall", "images"):
        per_class.add_column(header, no_wrap=True, justify="left" if header == "class" else "right")
    for name, scores in evaluation["per_class"].items():
        per_class.add_row(Text(printable(name)), _share(scores["precision"]), _share(scores["recall"]), str(scores["images"]))
    parts: list[ConsoleRenderable] = [Text(score_line(evaluation), no_wrap=True, overflow="ignore"), per_class]
    matrix = confusion_table(evaluation)
    needed = console.measure(matrix, options=console.options.update_width(UNLIMITED_WIDTH)).maximum
    if needed <= console.width:
        parts.append(matrix)
    else:
        parts.append(Text("The confusion matrix is too wide for this terminal: see --json or `automl-transfer report`."))
    return Group(*parts)


def confusion_table(evaluation: dict[str, Any]) -> Table:
    """Return the confusion matrix as a table: a row per true class, a column per predicted class."""
    names = evaluation["class_names"]
    table = Table(title="Confusion matrix")
    table.add_column("true \\ predicted", no_wrap=True)
    for name in names:
        table.add_column(Text(printable(name)), no_wrap=True, justify="right")
    for name, row in zip(names, evaluation["confusion_matrix"]):
        table.add_row(Text(printable(name)), *(str(count) for count in row))
    return table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
