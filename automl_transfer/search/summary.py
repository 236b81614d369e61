"""``summary.json``: what a search found so far, written after every trial."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from automl_transfer.errors import RunDirError
from automl_transfer.search.claims import claim_lock
from automl_transfer.search.counting import trial_counts
from automl_transfer.search.finalists import cross_check_record, cross_checked_best
from automl_transfer.storage.atomic import write_json_atomically
from automl_transfer.storage.checkpoint import read_best_info
from automl_transfer.storage.run_dir import SUMMARY_NAME

if TYPE_CHECKING:
    import optuna


def best_trial(study: optuna.Study, run_dir: Path | None = None) -> FrozenTrial | None:
    """Return the study's best complete trial; among equally good ones, the one saved in ``best/``.

    After a cross-check of the finalists (:mod:`automl_transfer.search.cross_check`), the
    finalist with the best mean fold score is the best trial. Otherwise equally good trials are
    told apart when saved (the lower validation loss, then the first saved stays in ``best/``),
    so the one in ``best/`` is the one reported.

    :param run_dir: the run directory whose ``best/model.json`` breaks ties (``None``: Optuna's choice).
    :returns: the trial, or ``None`` before a trial completes.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    cross_checked = cross_checked_best(study)
    if cross_checked is not None:
        return next(trial for trial in completed if trial.number == cross_checked)
    best = study.best_trial
    saved = _saved_info(run_dir)
    if saved is not None:
        for trial in completed:
            if trial.number == saved.get("trial") and trial.value == best.value:
                return trial
    return best


def build_summary(study: optuna.Study, metric: str, run_dir: Path | None = None) -> dict[str, Any]:
    """Describe a study as ``summary.json`` holds it.

    :param run_dir: the run directory, whose best model decides between equally good trials
        and says whether it was refit.
    :returns: ``{"metric", "best_value", "best_params", "best_trial", "n_complete",
        "n_pruned", "n_failed", "refit", "cross_check"}``; the best fields are ``None`` before a trial
        completes (``best_value`` is the validation score that selected the best trial);
        ``n_failed`` leaves out lost trials that a re-queued trial replaced; ``refit`` is
        ``None`` while ``best/`` holds the selected trial's own model, and ``{"trial",
        "epochs", "train_images", "seed"}`` once it holds that configuration trained again
        on every labelled image (see :mod:`automl_transfer.search.refit`); ``cross_check``
        is ``None`` unless the finalists were cross-checked, then ``{"folds", "finalists":
        [{"trial", "value", "mean", "spread", "scores"}]}``
        (:func:`~automl_transfer.search.finalists.cross_check_record`).
    """
    counts = trial_counts(study)
    best = best_trial(study, run_dir)
    saved = _saved_info(run_dir)
    refit = saved.get("refit") if saved is not None and best is not None and saved.get("trial") == best.number else None
    return {
        "metric": metric,
        "best_value": best.value if best else None,
        "best_params": best.user_attrs.get("params", best.params) if best else None,
        "best_trial": best.number if best else None,
        "n_complete": counts["n_complete"],
        "n_pruned": counts["n_pruned"],
        "n_failed": counts["n_failed"],
        "refit": refit,
        "cross_check": cross_check_record(study),
    }


def _saved_info(run_dir: Path | None) -> dict[str, Any] | None:
    """The ``model.json`` of ``run_dir``'s best model, or ``None`` (none yet, or unreadable)."""
    if run_dir is None:
        return None
    try:
        return read_best_info(run_dir)
    except RunDirError:
        return None


def write_summary(study: optuna.Study, metric: str, run_dir: Path, test: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``summary.json`` from the study's current state and return it.

    Workers write it in turn (under the claim lock), each from the state it then reads, so the
    last write reflects every finished trial.

    :param test: the final best model's scores on held-out images, kept under ``test``
        (``None`` until the search has scored it, at its end).
    """
    with claim_lock(run_dir):
        summary = build_summary(study, metric, run_dir)
        summary["test"] = test
        write_json_atomically(Path(run_dir) / SUMMARY_NAME, summary)
    return summary
