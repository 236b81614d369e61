"""After the search: the winning configuration trained again on every labelled image.

A trial trains on the training split and is judged on the validation split, which it never
learns from. Once the search has picked its winner by validation score, :func:`refit_best`
trains that configuration once more, from the same seed, on training and validation images
together, for the epochs its trial found best, and makes the result ``best/`` (atomically, as
every save). ``model.json`` and ``summary.json`` then carry ``refit``: how it was retrained;
``value`` and ``metrics`` stay the validation scores that selected the configuration.

After a cross-check (:mod:`automl_transfer.search.cross_check`) the refit trains the finalist
with the best mean fold score, which may not be the trial whose own model is in ``best/``.

A refit that crashes leaves the selected model in ``best/``; the next run of the same search
command refits it again. A refit is skipped while another process still runs trials (its
result could still change the winner).
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
import torch
from optuna.trial import FrozenTrial

from automl_transfer.data.prepare import LabelledTensors, PreparedData
from automl_transfer.registry import call_observers
from automl_transfer.search.counting import trial_counts
from automl_transfer.search.finalists import cross_checked_best
from automl_transfer.search.recovery import SEED_TRIAL
from automl_transfer.search.summary import best_trial
from automl_transfer.search.trials import TrialContext, TrialRunner
from automl_transfer.storage.checkpoint import read_best_info, save_best
from automl_transfer.training.params import TrialParams
from automl_transfer.training.trial import TrainedModel, run_trial


def refit_best(runner: TrialRunner, study: optuna.Study, base_seed: int) -> dict[str, Any] | None:
    """Train the best trial's configuration on train + validation and save it as ``best/``.

    :param runner: the search's trial runner (data, device, run dir, metric).
    :param study: the finished study.
    :param base_seed: the search's seed; the refit uses the best trial's own seed.
    :returns: the ``refit`` record written to ``model.json``, or ``None`` when nothing was
        refit: no complete trial, trials still running elsewhere, or ``best/`` already holds
        the refit of the best trial.
    """
    context = runner.context
    best = best_trial(study, context.run_dir)
    if best is None or trial_counts(study)["n_running"] > 0:
        return None
    saved = read_best_info(context.run_dir)
    if saved is None:
        return None
    if saved.get("trial") != best.number and cross_checked_best(study) != best.number:
        return None  # best/ is the only copy of a winner's weights; never refit a stranger
    if saved.get("trial") == best.number and saved.get("refit"):
        return saved["refit"]
    params = TrialParams.from_dict(best.user_attrs["params"])
    epochs, seed = refit_epochs(best), trial_seed(best, base_seed)
    everything = all_labelled(context.prepare(params.image_size, params.interpolation))
    phase = f"refit of trial {best.number} on train + validation ({len(everything.train)} images, {epochs} epochs)"
    call_observers("search_phase", phase=phase, done=0, total=epochs)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        call_observers("search_phase", phase=phase, done=epoch, total=epochs)

    trained = retrain(context, best, everything, base_seed, on_epoch)
    record = {"trial": best.number, "epochs": epochs, "train_images": len(everything.train), "seed": seed}
    info = runner.model_info(best.number, trained, float(best.value))
    # What selected the configuration stays recorded: its parameters and validation scores.
    info.params, info.metrics = best.user_attrs["params"], dict(best.user_attrs.get("metrics", {}))
    info.best_epoch = best.user_attrs.get("best_epoch")
    info.refit = record
    save_best(context.run_dir, trained.model, info)
    return record


def retrain(
    context: TrialContext,
    trial: FrozenTrial,
    data: PreparedData,
    base_seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
) -> TrainedModel:
    """Train ``trial``'s configuration again on ``data``, with its seed, for the epochs it found best.

    The refit and the cross-check's folds train this way; there is no early stopping (``data``
    may have no validation split).

    :param context: the search's trial context (device, metric, backbone cache).
    :param trial: a complete trial, with its recorded parameters.
    :param data: the images to train on.
    :param base_seed: the search's seed.
    :param on_epoch: called with ``(epoch, metrics)`` after each epoch.
    :returns: the trained model.
    """
    params = TrialParams.from_dict(trial.user_attrs["params"])
    return run_trial(
        params.replace(epochs=refit_epochs(trial), patience=0),
        lambda size, interpolation: data,
        context.device,
        on_epoch,
        compile_model=context.compile_model,
        seed=trial_seed(trial, base_seed),
        monitor=context.metric_key,
        build=context.build_backbone,
    )


def refit_epochs(trial: FrozenTrial) -> int:
    """The epochs a trial's configuration trains for when trained again: its best epoch (else its ``epochs``)."""
    return int(trial.user_attrs.get("best_epoch") or TrialParams.from_dict(trial.user_attrs["params"]).epochs)


def trial_seed(trial: FrozenTrial, base_seed: int) -> int:
    """The seed ``trial`` trained with (a re-queued trial keeps the seed of the trial it replaced)."""
    return base_seed + trial.user_attrs.get(SEED_TRIAL, trial.number)


def all_labelled(data: PreparedData) -> PreparedData:
    """Return ``data`` with its validation images moved into the training split (no validation left)."""
    train = LabelledTensors(
        images=torch.cat([data.train.images, data.val.images]), labels=torch.cat([data.train.labels, data.val.labels])
    )
    return PreparedData(data.class_names, train, None, data.test, data.n_skipped, data.fingerprint)
