"""The search: an Optuna study over transfer settings, one real fine-tuning run per trial.

:class:`TransferSearch` is the Python front door; ``automl-transfer search`` is a thin shell
over it. Trials are drawn with Optuna's ask-and-tell interface so that each outcome keeps
its reason (``non-finite loss``, ``out of memory``, ``interrupted`` ...) and so that the
requested number of trials is met exactly, across resumes and parallel workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import math
import os
import re
import socket
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import optuna
import torch
from optuna.trial import TrialState

from automl_transfer import checkpoint
from automl_transfer.datasets import PreparedData, dataset_fingerprint, load_dataset, prepare_data
from automl_transfer.devices import resolve_device
from automl_transfer.errors import AutoMLTransferError, RunDirError
from automl_transfer.plugins import call_observers, load_plugins
from automl_transfer.progress import SearchProgress
from automl_transfer.run_dir import (
    CACHE_NAME,
    SUMMARY_NAME,
    build_summary,
    open_storage,
    prepare_run_dir,
    trial_counts,
    write_json_atomically,
)
from automl_transfer.sources import SourceSpec, build_backbone
from automl_transfer.space import SearchSpace, load_space
from automl_transfer.training import NonFiniteLossError, OutOfMemoryTrialError
from automl_transfer.trial_runner import METRICS, TrainedModel, run_trial

IDENTITY_ATTR = "automl_transfer"
PRUNERS = ("hyperband", "median", "none")
SAMPLERS = ("tpe", "random")


@dataclass
class SearchConfig:
    """Everything a search needs; each field is also a CLI flag and a job-YAML key.

    :param dataset: ``PLUGIN[:LOCATION]``, e.g. ``imagefolder:data/pets`` or ``digits``.
    :param space: a preset name (``small``, ``default``, ``demo``) or a YAML path.
    :param trials: how many trials the study should hold when done (earlier runs count).
    :param timeout: stop starting new trials after this many seconds (``None``: no limit).
    :param run_dir: where the study, best model and summary live (default ``runs/<study>``).
    :param study: the Optuna study name (default: derived from dataset and space).
    :param storage: an RDB URL for multi-machine searches; default the run dir's journal file.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param seed: seeds the sampler, the validation split and training.
    :param metric: ``accuracy``, ``macro_f1`` or ``loss``.
    :param pruner: ``hyperband``, ``median`` or ``none``.
    :param sampler: ``tpe`` (multivariate) or ``random``.
    :param val_fraction: the share of each class held out for validation when the dataset
        has no validation split of its own.
    :param skip_bad_images: skip and count unreadable images instead of stopping.
    :param compile: ``torch.compile`` the model on CUDA.
    :param force_new: replace a study in the run dir that holds a different dataset or space.
    :param quiet: no per-trial lines, only the final table.
    """

    dataset: str
    space: str = "small"
    trials: int = 20
    timeout: float | None = None
    run_dir: Path | None = None
    study: str | None = None
    storage: str | None = None
    device: str = "auto"
    seed: int = 0
    metric: str = "accuracy"
    pruner: str = "hyperband"
    sampler: str = "tpe"
    val_fraction: float = 0.2
    skip_bad_images: bool = False
    compile: bool = False
    force_new: bool = False
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trials is None or int(self.trials) < 1:
            raise AutoMLTransferError(f"--trials must be a positive number, not {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise AutoMLTransferError(f"--timeout must be a positive number of seconds, not {self.timeout}")
        for name, value, allowed in (
            ("metric", self.metric, tuple(METRICS)),
            ("pruner", self.pruner, PRUNERS),
            ("sampler", self.sampler, SAMPLERS),
        ):
            if value not in allowed:
                raise AutoMLTransferError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if not 0 < self.val_fraction < 1:
            raise AutoMLTransferError(f"--val-fraction must be between 0 and 1, not {self.val_fraction}")
        self.trials = int(self.trials)
        self.study = self.study or default_study_name(self.dataset, self.space)
        self.run_dir = Path(self.run_dir) if self.run_dir else Path("runs") / self.study


def default_study_name(dataset: str, space: str) -> str:
    """Derive a file-name-safe study name from a dataset spec and a space name or path."""
    space_name = Path(space).stem if space.endswith((".yaml", ".yml")) else space
    dataset_name = Path(dataset.replace(":", "-")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset_name}-{space_name}").strip("-.") or "search"


class TransferSearch:
    """An Optuna search over transfer settings whose best model is always on disk.

    Example::

        from automl_transfer import TransferSearch, load_model

        summary = TransferSearch(dataset="digits", space="demo", trials=4, run_dir="runs/digits").run()
        model = load_model("runs/digits")
        print(summary["best_value"], model.predict(["some.png"])[0].label)

    :param config: a :class:`SearchConfig`, or its fields as keyword arguments.
    """

    def __init__(self, config: SearchConfig | None = None, **fields: Any):
        self.config = config if config is not None else SearchConfig(**fields)
        self.direction = METRICS[self.config.metric][1]
        self.metric_key = METRICS[self.config.metric][0]
        self._prepared: dict[tuple[int, str], PreparedData] = {}
        self.progress = SearchProgress(quiet=self.config.quiet, metric=self.config.metric)

    def run(self) -> dict[str, Any]:
        """Run trials until the study holds ``trials`` finished ones or the timeout passes.

        :returns: the summary written to ``summary.json``.
        :raises AutoMLTransferError: bad input, found before any training.
        :raises KeyboardInterrupt: after the running trial is recorded as ``interrupted``.
        """
        study = self.open()
        deadline = None if self.config.timeout is None else time.monotonic() + self.config.timeout
        settings = self.settings()
        call_observers("search_start", run_dir=self.config.run_dir, study=study, settings=settings)
        self.progress.start(total=self.config.trials, done=self._finished(study))
        try:
            while deadline is None or time.monotonic() < deadline:
                trial = self._claim_trial(study)
                if trial is None:
                    break
                self._run_one(study, trial)
                self.progress.advance(study, trial.number, self.direction)
        finally:
            summary = self.write_summary(study)
            self.progress.stop(study, self.direction)
            call_observers("search_end", run_dir=self.config.run_dir, study=study, summary=summary)
        return summary

    def open(self) -> optuna.Study:
        """Check the inputs and open (or create, or resume) the study in the run dir.

        :returns: the study, with the search's identity recorded in its user attrs.
        :raises AutoMLTransferError: bad dataset, space, source, storage or run dir.
        """
        load_plugins()
        self.space: SearchSpace = load_space(self.config.space)
        self.dataset = load_dataset(self.config.dataset)
        self.device = resolve_device(self.config.device)
        data_configs = check_sources(self.space.sources)
        self.config.run_dir = prepare_run_dir(self.config.run_dir)
        first = data_configs[self.space.sources[0]]
        self.prepare(int(first["input_size"][-1]), first.get("interpolation", "bilinear"))
        storage = open_storage(self.config.run_dir, self.config.storage)
        identity = {
            "dataset": self.config.dataset,
            "dataset_fingerprint": dataset_fingerprint(self.dataset),
            "space": self.space.to_dict(),
            "space_fingerprint": self.space.fingerprint(),
            "metric": self.config.metric,
            "seed": self.config.seed,
            "val_fraction": self.config.val_fraction,
        }
        return self._open_study(storage, identity)

    def settings(self) -> dict[str, Any]:
        """Return the search's settings as a JSON-ready dict (for observers and reports)."""
        settings = asdict(self.config)
        settings["run_dir"] = str(self.config.run_dir)
        return settings

    def prepare(self, image_size: int, interpolation: str) -> PreparedData:
        """Return the dataset decoded at ``image_size``, decoding it at most once per process."""
        key = (image_size, interpolation)
        if key not in self._prepared:
            self._prepared[key] = prepare_data(
                self.dataset,
                image_size,
                interpolation=interpolation,
                val_fraction=self.config.val_fraction,
                seed=self.config.seed,
                skip_bad_images=self.config.skip_bad_images,
                cache_dir=self.config.run_dir / CACHE_NAME,
            )
        return self._prepared[key]

    def write_summary(self, study: optuna.Study) -> dict[str, Any]:
        """Write ``summary.json`` from the study's current state and return it."""
        summary = build_summary(study, self.config.metric)
        write_json_atomically(self.config.run_dir / SUMMARY_NAME, summary)
        return summary

    def _open_study(self, storage: optuna.storages.BaseStorage, identity: dict[str, Any]) -> optuna.Study:
        name = self.config.study
        if name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage, sampler=self._sampler(), pruner=self._pruner())
            recorded = study.user_attrs.get(IDENTITY_ATTR, {})
            differences = [key for key in identity if key != "seed" and recorded.get(key) != identity[key]]
            if not differences:
                return study
            if not self.config.force_new:
                raise RunDirError(
                    f"run dir {self.config.run_dir} already holds study {name!r} with a different "
                    f"{', '.join(differences)}; pass --force-new to replace it, or choose another --run-dir"
                )
            optuna.delete_study(study_name=name, storage=storage)
            checkpoint.remove_best(self.config.run_dir)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=self.direction,
            sampler=self._sampler(),
            pruner=self._pruner(),
        )
        study.set_user_attr(IDENTITY_ATTR, identity)
        return study

    def _sampler(self) -> optuna.samplers.BaseSampler:
        if self.config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=self.config.seed, multivariate=True, group=True)

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.config.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
        if self.config.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    def _finished(self, study: optuna.Study) -> int:
        counts = trial_counts(study)
        return counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]

    def _claim_trial(self, study: optuna.Study) -> optuna.Trial | None:
        """Ask for a trial unless finished plus running trials already reach the target."""
        with self._claim_lock():
            counts = trial_counts(study)
            taken = counts["n_complete"] + counts["n_pruned"] + counts["n_failed"] + counts["n_running"]
            if taken >= self.config.trials:
                return None
            trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return trial

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        with open(self.config.run_dir / ".claim.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _run_one(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Run one claimed trial to its end and record the outcome in the study."""
        params = self.space.suggest(trial)
        trial.set_user_attr("params", params)
        call_observers("trial_start", trial=trial, params=params)
        trained = None
        try:
            trained = run_trial(
                params,
                self.prepare,
                self.device,
                self._epoch_reporter(trial),
                compile_model=self.config.compile,
                seed=self.config.seed + trial.number,
            )
            value = trained.metrics[self.metric_key]
            if not math.isfinite(value):
                raise NonFiniteLossError(f"final {self.metric_key} is {value}")
        except optuna.TrialPruned:
            self._finish(study, trial, TrialState.PRUNED)
        except NonFiniteLossError:
            self._finish(study, trial, TrialState.FAIL, "non-finite loss")
        except OutOfMemoryTrialError:
            self._finish(study, trial, TrialState.FAIL, "out of memory")
        except KeyboardInterrupt:
            self._finish(study, trial, TrialState.FAIL, "interrupted")
            raise
        except Exception as error:  # one broken trial must not end the search
            trial.set_user_attr("traceback", traceback.format_exc())
            self._finish(study, trial, TrialState.FAIL, f"{type(error).__name__}: {error}")
        else:
            checkpoint.save_best_if_better(
                self.config.run_dir, trained.model, self.best_info(trial, params, trained, value), value, self.direction
            )
            self._finish(study, trial, TrialState.COMPLETE, value=value)
        finally:
            del trained
            release_memory(self.device)
        self.write_summary(study)

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
        study.tell(trial, value, state=state)
        call_observers("trial_end", trial=trial, state=state, value=value, reason=reason)
        self.progress.trial_line(trial.number, state, value, reason, trial.user_attrs.get("params", {}))

    def _epoch_reporter(self, trial: optuna.Trial):
        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[self.metric_key], epoch)
            trial.set_user_attr(f"epoch_{epoch}", metrics)
            call_observers("epoch_end", trial=trial, epoch=epoch, metrics=metrics)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        return on_epoch

    def best_info(self, trial: optuna.Trial, params: dict[str, Any], trained: TrainedModel, value: float) -> dict[str, Any]:
        """Describe a trained model as ``best/model.json`` records it."""
        spec = SourceSpec.parse(params["source"])
        data_config = trained.backbone.data_config
        class_names = self.prepare(trained.image_size, data_config.get("interpolation", "bilinear")).class_names
        return {
            "format_version": 1,
            "source": params["source"],
            "backbone_plugin": spec.plugin,
            "architecture": trained.backbone.architecture,
            "head": params["head"],
            "head_params": params.get("head_params", {}),
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "preprocessing": {
                "image_size": trained.image_size,
                "interpolation": data_config.get("interpolation", "bilinear"),
                "mean": list(data_config["mean"]),
                "std": list(data_config["std"]),
            },
            "params": params,
            "metric": self.config.metric,
            "value": value,
            "metrics": trained.metrics,
            "trial": trial.number,
            "dataset": self.config.dataset,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def check_sources(sources: list[str]) -> dict[str, dict[str, Any]]:
    """Build every source once, so a bad name or unreachable weights fail before any training.

    :returns: each source's data config (input size, mean, std, interpolation).
    :raises AutoMLTransferError: a source that cannot be parsed, found or loaded.
    """
    return {source: _source_data_config(source) for source in dict.fromkeys(sources)}


@lru_cache(maxsize=None)
def _source_data_config(source: str) -> dict[str, Any]:
    return build_backbone(SourceSpec.parse(source)).data_config


def release_memory(device: torch.device) -> None:
    """Give back memory a finished trial held, so the next trial starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
