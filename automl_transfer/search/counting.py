"""How trials count toward ``--trials N``.

Complete, pruned and failed trials count, and so do running and waiting (enqueued) ones, as
they will finish. A trial lost to a dead worker or an interruption is failed and re-queued with
the same parameters (see :mod:`automl_transfer.search.recovery`); the re-queued trial takes its
place in the count, so the lost one does not count. A search therefore ends with exactly ``N``
counted trials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    import optuna

#: The user attr a re-queued trial holds: the number of the trial it replaces.
RETRY_OF = "retry_of"

_STATE_KEYS = {
    TrialState.COMPLETE: "n_complete",
    TrialState.PRUNED: "n_pruned",
    TrialState.FAIL: "n_failed",
    TrialState.RUNNING: "n_running",
    TrialState.WAITING: "n_waiting",
}


def replaced_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Return the numbers of the lost trials that a re-queued trial replaces (they do not count)."""
    return {trial.user_attrs[RETRY_OF] for trial in trials if RETRY_OF in trial.user_attrs}


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Count a study's trials by outcome, as they count toward ``--trials``.

    :returns: ``{"n_complete", "n_pruned", "n_failed", "n_running", "n_waiting", "n_replaced",
        "n_taken"}``: ``n_replaced`` counts the lost trials a re-queued trial replaces, which
        are left out of every other count; ``n_taken`` is the sum of the first five.
    """
    trials = study.get_trials(deepcopy=False)
    replaced = replaced_numbers(trials)
    counts = dict.fromkeys(_STATE_KEYS.values(), 0) | {"n_replaced": 0}
    for trial in trials:
        if trial.number in replaced:
            counts["n_replaced"] += 1
        elif trial.state in _STATE_KEYS:
            counts[_STATE_KEYS[trial.state]] += 1
    counts["n_taken"] = sum(counts[key] for key in _STATE_KEYS.values())
    return counts


def finished_count(study: optuna.Study) -> int:
    """Return how many counted trials have finished (complete, pruned or failed)."""
    counts = trial_counts(study)
    return counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]
