"""Helpers for observer plugins (the lifecycle hooks): the leaderboard and the trial counts of a study.

``leaderboard(study, metric, console)`` returns the leaderboard the console prints (a rich
renderable with every varying parameter), ``wide_console()`` a stdout console wide enough for it,
and ``trial_counts(study)`` the study's trials by outcome (``n_complete``, ``n_pruned``,
``n_failed`` ...), counted as ``--trials`` counts them. Importing this module imports optuna and
rich: import it in an observer plugin, not in one that only registers components.
"""

from __future__ import annotations

from automl_transfer.reporting.leaderboard import leaderboard, wide_console
from automl_transfer.search.counting import trial_counts

__all__ = ["leaderboard", "trial_counts", "wide_console"]
