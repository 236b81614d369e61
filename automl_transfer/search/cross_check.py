"""Cross-checking the finalists: k-fold scores for the best few trials before the refit.

On a few-shot dataset the validation split holds a few dozen images, and one image more or
less decides which trial wins. With ``cross_check`` finalists, the search re-scores its best
few trials (by validation score) by stratified k-fold cross-validation on every labelled image:
each finalist's configuration is trained ``folds`` times, each time on all folds but one for
the epochs its trial found best, and scored on the fold left out. The finalist with the best
mean keeps ``best/`` (through the refit) and the summary reports every finalist's fold scores,
mean and spread.

The folds and every fold's score are recorded in the study as soon as they exist, so a search
interrupted here resumes with the same folds and trains no fold twice.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial

from automl_transfer.data.prepare import LabelledTensors, PreparedData
from automl_transfer.errors import AutoMLTransferError
from automl_transfer.registry import call_observers
from automl_transfer.search.finalists import (
    FOLDS_ATTR,
    SCORES_ATTR,
    cross_checked_best,
    finalists,
)
from automl_transfer.search.refit import all_labelled, retrain
from automl_transfer.search.trials import TrialRunner
from automl_transfer.training.evaluation import evaluate
from automl_transfer.training.params import TrialParams


def stratified_folds(labels: Sequence[int], folds: int, seed: int) -> list[int]:
    """Assign every image to one of ``folds`` folds, each class spread evenly over them.

    Each class's images are shuffled (by ``seed``) and dealt round-robin, the next class
    starting where the last one stopped: every fold holds ``n // folds`` or one more of each
    class, and the folds' sizes differ by at most one.

    :param labels: the class index of every labelled image, in the prepared order.
    :param folds: how many folds, at least 2 and at most the number of images.
    :param seed: seeds the shuffle.
    :returns: the fold (``0 .. folds - 1``) of every image.
    :raises AutoMLTransferError: ``folds`` out of range.
    """
    if not 2 <= folds <= len(labels):
        raise AutoMLTransferError(f"--folds must be between 2 and the {len(labels)} labelled images, not {folds}")
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[int(label)].append(index)
    shuffler = random.Random(seed)
    assignment = [0] * len(labels)
    dealt = 0
    for label in sorted(members):
        shuffler.shuffle(members[label])
        for index in members[label]:
            assignment[index] = dealt % folds
            dealt += 1
    return assignment


def cross_check(runner: TrialRunner, study: optuna.Study, base_seed: int, count: int, folds: int) -> int | None:
    """Score the best ``count`` trials by stratified ``folds``-fold cross-validation; return the winner.

    Folds recorded in the study are reused when they have the same number of folds and images;
    fold scores already recorded are not trained again.

    :param runner: the search's trial runner (data, device, metric).
    :param study: the finished study.
    :param base_seed: the search's seed: it seeds the folds, and each finalist trains with its trial's seed.
    :param count: how many finalists (fewer when fewer trials completed).
    :param folds: how many folds.
    :returns: the number of the trial with the best mean fold score, or ``None`` with fewer than
        two complete trials (nothing to choose between).
    :raises AutoMLTransferError: ``folds`` larger than the labelled images.
    """
    chosen = finalists(study, count)
    if len(chosen) < 2:
        return None
    context = runner.context
    record = study.user_attrs.get(SCORES_ATTR) or {"scores": {}}
    record["finalists"] = [trial.number for trial in chosen]
    for place, trial in enumerate(chosen):
        params = TrialParams.from_dict(trial.user_attrs["params"])
        everything = all_labelled(context.prepare(params.image_size, params.interpolation)).train
        assignment = _recorded_folds(study, everything.labels.tolist(), folds, base_seed, record)
        done = record["scores"].setdefault(str(trial.number), {})
        phase = f"cross-checking finalist {place + 1} of {len(chosen)} (trial {trial.number}), {folds} folds"
        for fold in range(folds):
            call_observers("search_phase", phase=phase, done=fold, total=folds)
            if str(fold) in done:
                continue
            done[str(fold)] = _fold_score(runner, trial, params, everything, assignment, fold, base_seed)
            study.set_user_attr(SCORES_ATTR, record)
        call_observers("search_phase", phase=phase, done=folds, total=folds)
    study.set_user_attr(SCORES_ATTR, record)
    return cross_checked_best(study)


def _recorded_folds(study: optuna.Study, labels: list[int], folds: int, seed: int, record: dict) -> list[int]:
    """The study's folds when they fit ``labels`` and ``folds``; else new ones, recorded.

    New folds make every recorded score meaningless: ``record``'s scores are dropped.
    """
    recorded = study.user_attrs.get(FOLDS_ATTR)
    if recorded and recorded["folds"] == folds and len(recorded["assignment"]) == len(labels):
        return list(recorded["assignment"])
    assignment = stratified_folds(labels, folds, seed)
    record["scores"] = {}
    study.set_user_attr(FOLDS_ATTR, {"folds": folds, "seed": seed, "assignment": assignment})
    study.set_user_attr(SCORES_ATTR, record)
    return assignment


def _fold_score(
    runner: TrialRunner, trial: FrozenTrial, params: TrialParams, everything: LabelledTensors,
    assignment: list[int], fold: int, base_seed: int,
) -> float:
    """Train ``trial``'s configuration on every fold but ``fold``; its metric on ``fold``."""
    context = runner.context
    held = [index for index, owner in enumerate(assignment) if owner == fold]
    kept = [index for index, owner in enumerate(assignment) if owner != fold]
    train = LabelledTensors(everything.images[kept], everything.labels[kept])
    data = PreparedData(context.prepare(params.image_size, params.interpolation).class_names, train, None, None, 0, "")
    trained = retrain(context, trial, data, base_seed)
    metrics = evaluate(trained.model, LabelledTensors(everything.images[held], everything.labels[held]),
                       context.device, 2 * params.batch_size)
    return float(metrics[context.metric_key])
