"""Running one claimed trial to its end and recording the outcome in the study.

:class:`TrialRunner` samples the trial's parameters, trains the model
(:func:`~automl_transfer.training.trial.run_trial`), reports every epoch to the pruner and the
observers, keeps the model as ``best/`` when it beats the recorded best, and tells the study
how the trial ended: complete, pruned, or failed with a reason (``non-finite loss``,
``out of memory``, the exception's text, ``interrupted``).
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from automl_transfer.contract.components import Backbone
from automl_transfer.data.prepare import PreparedData
from automl_transfer.errors import RunDirError
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import build_backbone
from automl_transfer.registry import call_observers
from automl_transfer.search.claims import claim_lock
from automl_transfer.search.recovery import INTERRUPTED, SEED_TRIAL, TRAIN_SEED, settle_lost_trial
from automl_transfer.search.signals import raise_if_stopped
from automl_transfer.search.summary import write_summary
from automl_transfer.space import SearchSpace
from automl_transfer.storage.checkpoint import save_best_if_better
from automl_transfer.storage.model_info import BestModelInfo
from automl_transfer.storage.run_dir import CACHE_NAME
from automl_transfer.training.devices import release_memory
from automl_transfer.training.failures import NonFiniteLossError, TrialFailed
from automl_transfer.training.params import TrialParams
from automl_transfer.training.trial import TrainedModel, run_trial


@dataclass
class TrialContext:
    """What running a trial needs from its search.

    :param space: the search space trials sample from.
    :param source_configs: each source's data config (input size, mean, std, interpolation).
    :param prepare: ``prepare(image_size, interpolation)`` returns the decoded dataset.
    :param device: where trials train.
    :param run_dir: the run directory (``best/``, ``summary.json``, the claim lock).
    :param dataset: the dataset text, recorded in ``model.json``.
    :param metric: the objective's name (``accuracy``).
    :param metric_key: the epoch-metrics key the objective reads (``val_loss`` for ``loss``).
    :param direction: ``maximize`` or ``minimize``.
    :param seed: the base seed; a trial trains with ``seed + its number``.
    :param compile_model: ``torch.compile`` on CUDA.
    :param build_backbone: builds a source's backbone (a search's cache of them).
    """

    space: SearchSpace
    source_configs: dict[str, dict[str, Any]]
    prepare: Callable[[int, str], PreparedData]
    device: torch.device
    run_dir: Path
    dataset: str
    metric: str
    metric_key: str
    direction: str
    seed: int
    compile_model: bool
    build_backbone: Callable[[str], Backbone] = build_backbone


class TrialRunner:
    """Runs claimed trials of one search and records their outcomes.

    :param context: what the trials need from the search.
    :param storage: the search's Optuna storage (to settle an interrupted trial).
    """

    def __init__(self, context: TrialContext, storage: optuna.storages.BaseStorage):
        self.context = context
        self.storage = storage

    def run(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Run ``trial`` to its end, tell the study how it ended and rewrite ``summary.json``.

        :raises KeyboardInterrupt: after the trial was recorded as interrupted.
        """
        context = self.context
        trained = None
        try:
            params = self.suggest(trial)
            trial.set_user_attr("params", params.to_dict())
            call_observers("trial_start", trial=trial, params=params.to_dict())
            seed = context.seed + trial.user_attrs.get(SEED_TRIAL, trial.number)
            trial.set_user_attr(TRAIN_SEED, seed)  # what `automl-transfer repair` retrains a lost best model with
            try:
                trained = self.train(params, seed, self._epoch_reporter(trial))
                value = trained.metrics[context.metric_key]
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"final {context.metric_key} is {value}")
            except optuna.TrialPruned:
                self._finish(study, trial, TrialState.PRUNED)
            except TrialFailed as failure:
                self._finish(study, trial, TrialState.FAIL, failure.reason)
            except Exception as error:  # one broken trial must not end the search
                trial.set_user_attr("traceback", traceback.format_exc())
                self._finish(study, trial, TrialState.FAIL, f"{type(error).__name__}: {error}")
            else:
                trial.set_user_attr("batch_size_used", trained.batch_size)
                trial.set_user_attr("best_epoch", trained.best_epoch)
                trial.set_user_attr("frozen_reuse", trained.frozen_reuse)
                trial.set_user_attr("metrics", trained.metrics)  # val_loss breaks ties on the metric
                self._save_if_best(study, trial, trained, value)
                self._finish(study, trial, TrialState.COMPLETE, value=value)
        except KeyboardInterrupt:
            self._record_interrupted(study, trial)
            raise
        finally:
            del trained
            release_memory(context.device)
        write_summary(study, context.metric, context.run_dir)

    def train(self, params: TrialParams, seed: int, on_epoch: Callable[[int, dict[str, float]], None]) -> TrainedModel:
        """Train the model of ``params`` as a trial of this search does (also to rebuild a lost best model).

        :raises TrialFailed: the trial failed (non-finite loss, out of memory).
        :raises optuna.TrialPruned: ``on_epoch`` pruned it.
        """
        context = self.context
        return run_trial(
            params,
            context.prepare,
            context.device,
            on_epoch,
            compile_model=context.compile_model,
            seed=seed,
            monitor=context.metric_key,
            cache_dir=context.run_dir / CACHE_NAME,
            build=context.build_backbone,
        )

    def suggest(self, trial: optuna.trial.BaseTrial) -> TrialParams:
        """Sample ``trial``'s parameters from the space and resolve them for its source."""
        suggested = self.context.space.suggest(trial)
        return TrialParams.resolve(suggested, self.context.source_configs[suggested["source"]])

    def model_info(self, number: int, trained: TrainedModel, value: float) -> BestModelInfo:
        """Describe a trained model as ``model.json`` records it."""
        context = self.context
        spec = SourceSpec.parse(trained.params.source)
        data_config = trained.backbone.data_config
        class_names = context.prepare(trained.params.image_size, trained.params.interpolation).class_names
        return BestModelInfo(
            source=trained.params.source,
            backbone_plugin=spec.plugin,
            architecture=trained.backbone.architecture,
            head=trained.params.head,
            head_params=dict(trained.params.head_params),
            num_classes=len(class_names),
            class_names=list(class_names),
            preprocessing={
                "image_size": trained.params.image_size,
                "interpolation": trained.params.interpolation,
                "mean": list(data_config["mean"]),
                "std": list(data_config["std"]),
            },
            params=trained.params.to_dict(),
            metric=context.metric,
            value=value,
            trial=number,
            dataset=context.dataset,
            metrics=trained.metrics,
            batch_size=trained.batch_size,
            best_epoch=trained.best_epoch,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    def _save_if_best(self, study: optuna.Study, trial: optuna.Trial, trained: TrainedModel, value: float) -> None:
        """Keep the model as ``best/`` when it beats the recorded best.

        :raises RunDirError: it could not be saved (a full disk, a damaged ``best/`` ...); the
            trial is then recorded failed and re-queued, and the search must stop: every later
            improving trial would fail the same way.
        """
        context = self.context
        info = self.model_info(trial.number, trained, value)
        try:
            save_best_if_better(context.run_dir, trained.model, info, value, context.direction)
        except (OSError, RunDirError) as error:
            if isinstance(error, OSError):
                problem = f"{error.strerror or error} ({error.filename or context.run_dir})"
                fix = "free some space (or fix the permissions), then run the same command again"
            else:
                problem, fix = str(error).split("; ", 1) if "; " in str(error) else (str(error), "fix it")
            try:
                self._record_interrupted(study, trial, f"best model not saved: {problem}")
            except OSError:  # the journal cannot be written either: the next run recovers the trial
                pass
            raise RunDirError(
                f"cannot save the best model of trial {trial.number}: {problem}; {fix}: trial {trial.number} "
                "runs again and nothing recorded so far is lost"
            ) from None

    def _record_interrupted(self, study: optuna.Study, trial: optuna.Trial, reason: str = INTERRUPTED) -> None:
        """Record a trial stopped before its end: failed and re-queued, or complete if its model is ``best/``."""
        run_dir = self.context.run_dir
        with claim_lock(run_dir):
            outcome = settle_lost_trial(study, self.storage, trial.number, reason, run_dir, died=False)
        if outcome is None:
            return
        state = TrialState.COMPLETE if outcome == "completed" else TrialState.FAIL
        call_observers("trial_end", trial=trial, state=state, value=None, reason=None if outcome == "completed" else reason)
        write_summary(study, self.context.metric, run_dir)

    def _finish(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        state: TrialState,
        reason: str | None = None,
        value: float | None = None,
    ) -> None:
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, value, state=state, skip_if_finished=True)
        call_observers("trial_end", trial=trial, state=state, value=value, reason=reason)

    def _epoch_reporter(self, trial: optuna.Trial) -> Callable[[int, dict[str, float]], None]:
        metric_key = self.context.metric_key

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            raise_if_stopped()
            trial.report(metrics[metric_key], epoch)
            trial.set_user_attr(f"epoch_{epoch}", metrics)
            call_observers("epoch_end", trial=trial, epoch=epoch, metrics=metrics)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        return on_epoch
