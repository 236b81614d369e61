"""The finalists of a search and their cross-check scores, as the study records them.

:mod:`automl_transfer.search.cross_check` trains the folds; this module reads what it
recorded, for the summary, the leaderboard and the choice of ``best/``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

#: Study user attr: ``{"folds": K, "seed": S, "assignment": [fold of each labelled image]}``.
FOLDS_ATTR = "cross_check_folds"
#: Study user attr: ``{"finalists": [TRIAL, ...], "scores": {"TRIAL": {"FOLD": score}}}``: the
#: trials being cross-checked, and each fold's score as soon as it is known.
SCORES_ATTR = "cross_check_scores"


def finalists(study: optuna.Study, count: int) -> list[FrozenTrial]:
    """Return the ``count`` best complete trials by validation score, as ``best/`` is picked.

    Among equal scores the lower validation loss comes first, then the earlier trial.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def key(trial: FrozenTrial) -> tuple[float, float, int]:
        loss = trial.user_attrs.get("metrics", {}).get("val_loss")
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        return sign * trial.value, loss if finite else math.inf, trial.number

    return sorted(complete, key=key)[:count]


def cross_checked_best(study: optuna.Study) -> int | None:
    """Return the finalist with the best mean fold score, or ``None`` until every finalist has every fold's.

    Among equal means, the better validation score wins, then the earlier trial.
    """
    record = cross_check_record(study)
    if record is None:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(record["finalists"], key=lambda entry: sign * entry["mean"])["trial"]  # min keeps the first of equals


def cross_check_record(study: optuna.Study) -> dict[str, Any] | None:
    """The finished cross-check as ``summary.json`` reports it, or ``None`` when there is none.

    :returns: ``{"folds": K, "finalists": [{"trial", "value", "mean", "spread", "scores"}]}``,
        finalists in the order of their validation scores (``value``); ``scores`` are the
        folds' scores, ``spread`` their standard deviation. ``None`` while a finalist lacks a
        fold's score, or once later trials have changed which trials are the best few.
    """
    folds = study.user_attrs.get(FOLDS_ATTR)
    record = study.user_attrs.get(SCORES_ATTR)
    if not folds or not record or not record.get("finalists"):
        return None
    if [trial.number for trial in finalists(study, len(record["finalists"]))] != record["finalists"]:
        return None  # later trials changed the finalists: the search cross-checks them again at its end
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    entries = []
    for number in record["finalists"]:
        fold_scores = record["scores"].get(str(number), {})
        if number not in trials or len(fold_scores) < folds["folds"]:
            return None
        values = [fold_scores[str(fold)] for fold in range(folds["folds"])]
        entries.append({
            "trial": number, "value": trials[number].value, "mean": statistics.fmean(values),
            "spread": statistics.pstdev(values), "scores": values,
        })
    return {"folds": folds["folds"], "finalists": entries}
