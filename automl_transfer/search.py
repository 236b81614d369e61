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
import time
import traceback
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator, Mapping

import optuna
import torch
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState

from automl_transfer import checkpoint
from automl_transfer.components import ImageDataset
from automl_transfer.datasets import PreparedData, dataset_fingerprint, load_dataset, prepare_data
from automl_transfer.devices import resolve_device
from automl_transfer.errors import DatasetError, RunDirError
from automl_transfer.plugins import call_observers, load_plugins
from automl_transfer.progress import SearchProgress
from automl_transfer.recovery import (
    INTERRUPTED,
    SEED_TRIAL,
    interrupt_on_signals,
    process_record,
    recover_lost_trials,
    settle_lost_trial,
)
from automl_transfer.run_dir import (
    CACHE_NAME,
    JOURNAL_NAME,
    SUMMARY_NAME,
    build_summary,
    check_run_dir,
    open_storage,
    prepare_run_dir,
    trial_counts,
    write_json_atomically,
)
from automl_transfer.search_config import SearchConfig, make_pruner, make_sampler
from automl_transfer.sources import SourceSpec, build_backbone
from automl_transfer.space import SearchSpace, load_space
from automl_transfer.training import NonFiniteLossError, OutOfMemoryTrialError
from automl_transfer.trial_runner import METRICS, TrainedModel, run_trial

#: Study user attr: what the search is (compared on resume) and what workers rebuild it from.
IDENTITY_ATTR = "automl_transfer"
#: The identity keys that must match for a run dir's study to be resumed.
IDENTITY_KEYS = ("dataset", "dataset_fingerprint", "space", "space_fingerprint", "metric", "val_fraction")
#: Study user attr: the settings of the latest ``search`` command, read by workers at every claim.
JOB_ATTR = "automl_transfer_job"


class TransferSearch:
    """An Optuna search over transfer settings whose best model is always on disk.

    Example::

        from automl_transfer import TransferSearch, load_model

        summary = TransferSearch(dataset="digits", space="demo", trials=4, run_dir="runs/digits").run()
        model = load_model("runs/digits")
        print(summary["best_value"], model.predict(["some.png"])[0].label)

    With ``workers=K`` the trials run in ``K`` worker processes; a worker, here or on another
    machine, joins with :func:`automl_transfer.workers.join_search` (see :mod:`automl_transfer.workers`).

    :param config: a :class:`SearchConfig`, or its fields as keyword arguments.
    """

    def __init__(self, config: SearchConfig | None = None, **fields: Any):
        self.config = config if config is not None else SearchConfig(**fields)
        self.direction = METRICS[self.config.metric][1]
        self.metric_key = METRICS[self.config.metric][0]
        self._prepared: dict[tuple[int, str], PreparedData] = {}
        self.progress = SearchProgress(quiet=self.config.quiet, metric=self.config.metric)
        self.storage: optuna.storages.BaseStorage | None = None

    def run(self) -> dict[str, Any]:
        """Run trials until the study holds ``trials`` counted ones or the timeout passes.

        Ctrl-C and SIGTERM stop it: each running trial is recorded as failed (``interrupted``)
        and re-queued, so running the same search again resumes it.

        :returns: the summary written to ``summary.json``.
        :raises AutoMLTransferError: bad input, found before any training.
        :raises KeyboardInterrupt: after the running trials were recorded as ``interrupted``.
        """
        with interrupt_on_signals() as signals:
            study = self.open()
            deadline = None if self.config.timeout is None else time.monotonic() + self.config.timeout
            settings = self.settings()
            call_observers("search_start", run_dir=self.config.run_dir, study=study, settings=settings)
            try:
                if self.config.workers == 1:
                    self.progress.start(total=self.config.trials, done=self._finished(study))
                    self.work(study, deadline)
                elif self.config.workers > 1:
                    from automl_transfer.workers import run_workers  # workers.py builds on this module

                    run_workers(self, study, deadline, signals)
                # workers=0: open() recorded the search; `automl-transfer worker` processes run it
            finally:
                summary = self.write_summary(study)
                self.progress.stop(study, self.direction)
                call_observers("search_end", run_dir=self.config.run_dir, study=study, summary=summary)
        return summary

    def work(self, study: optuna.Study, deadline: float | None = None) -> None:
        """Claim and run trials in this process until none is left or ``deadline`` passes.

        :param deadline: a ``time.monotonic()`` value after which no trial is claimed.
        :raises KeyboardInterrupt: after the running trial was recorded as ``interrupted``.
        """
        while deadline is None or time.monotonic() < deadline:
            trial = self._claim_trial(study)
            if trial is None:
                break
            heartbeat = get_heartbeat_thread(trial._trial_id, self.storage)
            heartbeat.start()
            try:
                self._run_one(study, trial)
            finally:
                heartbeat.join()
            self.progress.advance(study, trial.number, self.direction)

    def open(self) -> optuna.Study:
        """Check the inputs and open (or create, or resume) the study in the run dir.

        Everything is checked before anything is written: a bad input leaves an existing run
        dir as it was, and creates no new one.

        :returns: the study, with the search's identity and settings recorded in its user
            attrs, and the trials of dead workers recovered.
        :raises AutoMLTransferError: bad dataset, space, source, device, storage or run dir.
        """
        load_plugins()
        self.space: SearchSpace = load_space(self.config.space)
        self.dataset = read_dataset(self.config.dataset)
        self.devices = self._worker_devices()
        self.device = resolve_device(self.devices[0] if self.config.devices else self.config.device)
        data_configs = check_sources(self.space.sources)
        run_dir = self.config.run_dir = check_run_dir(self.config.run_dir)
        identity = {
            "dataset": self.config.dataset,
            "dataset_fingerprint": dataset_fingerprint(self.dataset),
            "space": self.space.to_dict(),
            "space_fingerprint": self.space.fingerprint(),
            "metric": self.config.metric,
            "seed": self.config.seed,
            "val_fraction": self.config.val_fraction,
        }
        if self.config.storage is not None or (run_dir / JOURNAL_NAME).is_file():
            self.storage = self._open_storage()
        study, replaced = self._existing_study(identity)
        first = data_configs[self.space.sources[0]]
        fixed_size = self.space.to_dict()["image_size"]
        image_size = fixed_size if isinstance(fixed_size, int) else first["input_size"][-1]
        self.prepare(int(image_size), first.get("interpolation", "bilinear"))
        prepare_run_dir(run_dir)
        if self.storage is None:
            self.storage = self._open_storage()
        if study is None:
            study = self._create_study(identity, replaced)
        self._record_job(study)
        self.recover(study)
        return study

    def recover(self, study: optuna.Study, exit_reasons: Mapping[int, str] | None = None) -> None:
        """Settle the trials of dead workers (see :mod:`automl_transfer.recovery`), then the summary.

        :param exit_reasons: reasons for workers known to have ended, by pid.
        """
        with self._claim_lock():
            settled = recover_lost_trials(study, self.storage, self.config.run_dir, exit_reasons)
        if settled:
            self.write_summary(study)

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
        """Write ``summary.json`` from the study's current state and return it.

        Workers write it in turn (under the claim lock), each from the state it then reads,
        so the last write reflects every finished trial.
        """
        with self._claim_lock():
            summary = build_summary(study, self.config.metric, self.config.run_dir)
            write_json_atomically(self.config.run_dir / SUMMARY_NAME, summary)
        return summary

    def _open_storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.config.run_dir, self.config.storage, self.config.heartbeat_interval)

    def _existing_study(self, identity: dict[str, Any]) -> tuple[optuna.Study | None, list[str]]:
        """Find the search the run dir (or the RDB storage, by study name) already holds.

        A run dir holds one search: its journal's study is resumed when it has the same
        identity, whatever its name, and refused otherwise.

        :returns: ``(study, [])`` to resume; ``(None, names)`` when the studies ``names`` hold
            a different search and ``--force-new`` replaces them; ``(None, [])`` when there is none.
        :raises RunDirError: a different search without ``--force-new``.
        """
        if self.storage is None:
            return None, []
        names = optuna.get_all_study_names(self.storage)
        if self.config.study in names:
            candidates = [self.config.study]
        else:
            candidates = names if self.config.storage is None else []
        differences: list[str] = []
        for name in candidates:
            study = self.load_study(name)
            recorded = study.user_attrs.get(IDENTITY_ATTR, {})
            differences += [key for key in IDENTITY_KEYS if recorded.get(key) != identity[key] and key not in differences]
            if len(candidates) == 1 and not differences:
                self.config.study = name
                return study, []
        if not candidates:
            return None, []
        if not self.config.force_new:
            found = ", ".join(repr(name) for name in candidates)
            what = f"a different {', '.join(differences)}" if differences else "several searches"
            raise RunDirError(
                f"run dir {self.config.run_dir} already holds study {found} with {what}; "
                "pass --force-new to replace it, or choose another --run-dir"
            )
        return None, candidates

    def _create_study(self, identity: dict[str, Any], replaced: list[str]) -> optuna.Study:
        for name in replaced:
            optuna.delete_study(study_name=name, storage=self.storage)
        if replaced:
            checkpoint.remove_best(self.config.run_dir)
        study = optuna.create_study(
            study_name=self.config.study,
            storage=self.storage,
            direction=self.direction,
            sampler=make_sampler(self.config),
            pruner=make_pruner(self.config),
        )
        study.set_user_attr(IDENTITY_ATTR, identity)
        return study

    def _record_job(self, study: optuna.Study) -> None:
        """Record what workers need beyond the identity, updated by every ``search`` command."""
        job = {
            "trials": self.config.trials,
            "seed": self.config.seed,
            "pruner": self.config.pruner,
            "sampler": self.config.sampler,
            "skip_bad_images": self.config.skip_bad_images,
            "compile": self.config.compile,
            "run_dir": str(self.config.run_dir),
            "cwd": os.getcwd(),
            "heartbeat_interval": self.config.heartbeat_interval,
        }
        if study.user_attrs.get(JOB_ATTR) != job:
            study.set_user_attr(JOB_ATTR, job)

    def _worker_devices(self) -> list[str]:
        """The devices of ``--devices`` (checked), or every GPU for ``auto``, or ``--device``."""
        if self.config.devices is not None:
            listed = self.config.devices.split(",") if isinstance(self.config.devices, str) else self.config.devices
            names = [name.strip() for name in listed if name.strip()] or [self.config.device]
            return [str(resolve_device(name)) for name in names]
        device = resolve_device(self.config.device)
        if self.config.device == "auto" and device.type == "cuda":
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
        return [str(device)]

    def load_study(self, name: str) -> optuna.Study:
        """Load study ``name`` from the search's storage with the search's sampler and pruner."""
        return optuna.load_study(
            study_name=name, storage=self.storage, sampler=make_sampler(self.config), pruner=make_pruner(self.config)
        )

    def _finished(self, study: optuna.Study) -> int:
        counts = trial_counts(study)
        return counts["n_complete"] + counts["n_pruned"] + counts["n_failed"]

    def _target(self, study: optuna.Study) -> int:
        """The trial count asked for by the latest ``search`` command (workers follow it)."""
        return int(study.user_attrs.get(JOB_ATTR, {}).get("trials", self.config.trials))

    def open_trials(self, study: optuna.Study) -> int:
        """Return how many trials are waiting or not yet claimed."""
        counts = trial_counts(study)
        return counts["n_waiting"] + max(0, self._target(study) - counts["n_taken"])

    def _claim_trial(self, study: optuna.Study) -> optuna.Trial | None:
        """Take a waiting trial, or ask a new one while the counted trials fall short of the target.

        Under the run dir's claim lock: lost trials are recovered first, so the count is right,
        and the process running the trial is recorded before the lock is let go.
        """
        with self._claim_lock():
            recover_lost_trials(study, self.storage, self.config.run_dir)
            if self.open_trials(study) == 0:
                return None
            # Seeded by the trial's number: reproducible, and parallel workers sample different trials.
            study.sampler = make_sampler(self.config, self.config.seed + len(study.get_trials(deepcopy=False)))
            with warnings.catch_warnings():
                # ask-and-tell runs its own heartbeat thread (see work()); optuna expects optimize().
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            for key, value in process_record().items():
                trial.set_user_attr(key, value)
            if is_heartbeat_enabled(self.storage):  # a first heartbeat before the lock goes: never unwatched
                self.storage.record_heartbeat(trial._trial_id)
        return trial

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        """Hold the run dir's claim lock (``flock``: not re-entrant, never nest it)."""
        with open(self.config.run_dir / ".claim.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _run_one(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Run one claimed trial to its end and record the outcome in the study."""
        trained = None
        try:
            params = self.space.suggest(trial)
            trial.set_user_attr("params", params)
            call_observers("trial_start", trial=trial, params=params)
            try:
                trained = run_trial(
                    params,
                    self.prepare,
                    self.device,
                    self._epoch_reporter(trial),
                    compile_model=self.config.compile,
                    seed=self.config.seed + trial.user_attrs.get(SEED_TRIAL, trial.number),
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
            except Exception as error:  # one broken trial must not end the search
                trial.set_user_attr("traceback", traceback.format_exc())
                self._finish(study, trial, TrialState.FAIL, f"{type(error).__name__}: {error}")
            else:
                info = self.best_info(trial, params, trained, value)
                checkpoint.save_best_if_better(self.config.run_dir, trained.model, info, value, self.direction)
                self._finish(study, trial, TrialState.COMPLETE, value=value)
        except KeyboardInterrupt:
            self._record_interrupted(study, trial)
            raise
        finally:
            del trained
            release_memory(self.device)
        self.write_summary(study)

    def _record_interrupted(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Record an interrupted trial: failed and re-queued, or complete if its model is ``best/``."""
        with self._claim_lock():
            outcome = settle_lost_trial(study, self.storage, trial.number, INTERRUPTED, self.config.run_dir, died=False)
        if outcome is None:
            return
        state = TrialState.COMPLETE if outcome == "completed" else TrialState.FAIL
        reason = None if outcome == "completed" else INTERRUPTED
        call_observers("trial_end", trial=trial, state=state, value=None, reason=reason)
        self.progress.trial_line(trial.number, state, None, reason, trial.user_attrs.get("params", {}))
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
        study.tell(trial, value, state=state, skip_if_finished=True)
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


def read_dataset(spec: str) -> ImageDataset:
    """Load a dataset as :func:`~automl_transfer.datasets.load_dataset` does.

    :raises DatasetError: also when a folder or file of the dataset cannot be read (permissions).
    """
    try:
        return load_dataset(spec)
    except OSError as error:
        raise DatasetError(
            f"cannot read dataset {spec}: {error.strerror or error} ({error.filename}); check the path and its permissions"
        ) from error


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
