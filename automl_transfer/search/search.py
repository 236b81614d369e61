"""The search: an Optuna study over transfer settings, one real fine-tuning run per trial.

:class:`TransferSearch` is the Python front door; ``automl-transfer search`` is a thin shell
over it, and ``automl-transfer worker`` joins one (:mod:`automl_transfer.search.join`). Its
lifecycle:

1. :meth:`TransferSearch.open` checks every input before anything is written, then creates or
   resumes the study and writes its record (:mod:`automl_transfer.search.record`); a worker
   calls :meth:`TransferSearch.attach` instead, which only reads the record.
2. :meth:`TransferSearch.work` claims trials (:mod:`automl_transfer.search.claims`) and runs
   each (:mod:`automl_transfer.search.trials`) until none is left; with ``workers=K``,
   :meth:`TransferSearch.run` has K worker processes do it (:mod:`automl_transfer.search.workers`).
3. After every trial ``summary.json`` is rewritten; the observers (the console output among
   them) hear of every step through the lifecycle hooks.

Ask-and-tell keeps each outcome's reason and meets the requested number of trials exactly,
across resumes and parallel workers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from functools import cached_property
from typing import Any, Mapping

import optuna

from automl_transfer.contract.components import ImageDataset
from automl_transfer.data.ahead import DecodingAhead
from automl_transfer.data.datasets import dataset_fingerprint, read_dataset
from automl_transfer.data.prepare import PreparedData, prepare_data
from automl_transfer.errors import DatasetError, RunDirError
from automl_transfer.model.source_spec import random_weights
from automl_transfer.model.sources import BackboneCache
from automl_transfer.ranking.rank import SourceScore, agreed_order, rank_sources
from automl_transfer.registry import call_observers, load_plugins
from automl_transfer.search.claims import claim_lock, claim_trial, open_trials
from automl_transfer.search.config import METRICS, SearchConfig, make_pruner, make_sampler, optuna_log
from automl_transfer.search.counting import finished_count, trial_counts
from automl_transfer.search.cross_check import cross_check
from automl_transfer.search.existing import existing_study
from automl_transfer.search.final_score import held_out_data, score_final_model
from automl_transfer.search.phases import Phase
from automl_transfer.search.rebuild import check_best_model
from automl_transfer.search.record import (
    JobSettings,
    SearchIdentity,
    recorded_identity,
    refresh_identity,
    split_seed,
    target_trials,
    write_identity,
    write_job,
    write_ranking,
)
from automl_transfer.search.recovery import recover_lost_trials
from automl_transfer.search.refit import refit_best
from automl_transfer.search.signals import interrupt_on_signals, raise_if_stopped
from automl_transfer.search.sources import apply_weights_choice, check_sources
from automl_transfer.search.summary import write_summary
from automl_transfer.search.trials import TrialContext, TrialRunner
from automl_transfer.search.workers import run_workers
from automl_transfer.space import SearchSpace, load_space
from automl_transfer.storage.backends import open_storage
from automl_transfer.storage.checkpoint import remove_best
from automl_transfer.storage.optuna_internals import start_heartbeat
from automl_transfer.storage.run_dir import CACHE_NAME, JOURNAL_NAME, check_run_dir, prepare_run_dir
from automl_transfer.training.devices import resolve_device, worker_devices
from automl_transfer.training.params import preprocessing_for

#: The user attr of a trial enqueued from the space's start points: its place among them.
START_POINT = "start_point"


class TransferSearch:
    """An Optuna search over transfer settings whose best model is always on disk.

    Example::

        from automl_transfer import TransferSearch, load_model

        summary = TransferSearch(dataset="digits", space="demo", trials=4, run_dir="runs/digits").run()
        model = load_model("runs/digits")
        print(summary["best_value"], model.predict(["some.png"])[0].label)

    :param config: a :class:`SearchConfig`, or its fields as keyword arguments.
    :param ahead: the dataset ``config`` names, listed and being decoded by a child process
        (:func:`~automl_transfer.search.ahead.decode_ahead`); the search takes its images.
    """

    def __init__(self, config: SearchConfig | None = None, *, ahead: DecodingAhead | None = None, **fields: Any):
        self.config = config if config is not None else SearchConfig(**fields)
        self.ahead = ahead
        self.metric_key, self.direction = METRICS[self.config.metric]
        self._prepared: dict[tuple[int, str], PreparedData] = {}
        self.split_seed = self.config.seed  # the validation split's: the study's first seed, whatever --seed is now
        self.storage: optuna.storages.BaseStorage | None = None
        self.runner: TrialRunner | None = None
        self.backbones = BackboneCache()
        self.held_out: ImageDataset | None = None

    def run(self) -> dict[str, Any]:
        """Run trials until the study holds ``trials`` counted ones or the timeout passes.

        Ctrl-C and SIGTERM stop it: each running trial is recorded as failed (``interrupted``)
        and re-queued, so running the same search again resumes it. Then, with ``refit``, the
        winner is trained again on every labelled image (:mod:`automl_transfer.search.refit`).

        At the end the best model is scored on held-out images (``test``, or the dataset's
        test split; see :mod:`automl_transfer.search.final_score`) into the summary's ``test``.

        :returns: the summary written to ``summary.json``.
        :raises AutoMLTransferError: bad input, found before any training.
        :raises KeyboardInterrupt: after the running trials were recorded as ``interrupted``.
        """
        with interrupt_on_signals() as signals:
            study = self.open()
            deadline = None if self.config.timeout is None else time.monotonic() + self.config.timeout
            call_observers("search_start", run_dir=self.config.run_dir, study=study, settings=self.settings())
            test = None
            try:
                if self.config.workers == 1:
                    self.work(study, deadline)
                elif self.config.workers > 1:
                    run_workers(self, study, deadline, signals)
                # workers=0: open() recorded the search; `automl-transfer worker` processes run it
                if self.config.refit and self.config.workers > 0:
                    if self.config.cross_check and trial_counts(study)["n_running"] == 0:
                        cross_check(self.runner, study, self.config.seed, self.config.cross_check, self.config.folds)
                    refit_best(self.runner, study, self.config.seed)
                if self.config.workers > 0 and self.held_out is not None:
                    test = score_final_model(self.config.run_dir, self.held_out, self.device, self.config.skip_bad_images)
            finally:
                summary = write_summary(study, self.config.metric, self.config.run_dir, test=test)
                call_observers("search_end", run_dir=self.config.run_dir, study=study, summary=summary)
        return summary

    def work(self, study: optuna.Study, deadline: float | None = None) -> None:
        """Claim and run trials in this process until none is left or ``deadline`` passes.

        :param deadline: a ``time.monotonic()`` value after which no trial is claimed.
        :raises KeyboardInterrupt: after the running trial was recorded as ``interrupted``.
        """
        while deadline is None or time.monotonic() < deadline:
            raise_if_stopped()
            trial = claim_trial(study, self.storage, self.config.run_dir, lambda: self.target(study), self._sampler)
            if trial is None:
                break
            heartbeat = start_heartbeat(trial, self.storage)
            try:
                self.runner.run(study, trial)
            finally:
                heartbeat.join()

    def open(self) -> optuna.Study:
        """Check the inputs and open (or create, or resume) the study in the run dir.

        Everything is checked before anything is written: a bad input leaves an existing run
        dir as it was, and creates no new one.

        :returns: the study, with the search's record in its user attrs and the trials of
            dead workers recovered.
        :raises AutoMLTransferError: bad dataset, space, source, device, storage, run dir or ``best/``.
        """
        space, dataset, source_configs = self._check_inputs()
        run_dir = self.config.run_dir = check_run_dir(self.config.run_dir)
        identity = SearchIdentity(
            dataset=self.config.dataset,
            dataset_fingerprint=self.fingerprint,
            space=space.written(),
            defaults=space.defaults(),
            metric=self.config.metric,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
        )
        if self.config.storage is not None or (run_dir / JOURNAL_NAME).is_file():
            self.storage = self._open_storage()
        study, replaced = self._existing_study(identity, settled=False)
        if study is not None:
            self._resume(study)
        self.prepare(*preprocessing_for(space.to_dict()["image_size"], source_configs[space.sources[0]]))
        prepare_run_dir(run_dir)
        with claim_lock(run_dir):  # one creator: a search started at the same moment joins the study made here
            if self.storage is None:
                self.storage = self._open_storage()
            if study is None and not replaced:
                study, replaced = self._existing_study(identity)
                if study is not None:
                    self._resume(study)
            if study is None:
                study = self._create_study(replace(identity, dataset_content=self.content_fingerprint), replaced)
        refresh_identity(study, identity)
        write_job(study, JobSettings.of(self.config))
        self._make_runner(source_configs)
        self.recover(study)
        return study

    def attach(self) -> optuna.Study:
        """Open the study a ``search`` command recorded, to run some of its trials (workers).

        The dataset, space and settings come from :attr:`config` (built from the study's
        record); the dataset must still have the fingerprint the search recorded, and the run
        dir must be reachable. Nothing is written to the record.

        :returns: the study.
        :raises AutoMLTransferError: changed data, a bad device, an unreachable run dir.
        """
        space, dataset, source_configs = self._check_inputs()
        if self.storage is None:
            self.storage = self._open_storage()
        study = self.load_study(self.config.study)
        self.split_seed = split_seed(study, self.config.seed)
        if self.fingerprint != recorded_identity(study).get("dataset_fingerprint"):
            raise DatasetError(
                f"dataset {self.config.dataset!r} is not the one study {self.config.study!r} was started with (files "
                "were added, removed or changed, or this machine sees other files); give every worker the same data"
            )
        if not self.config.run_dir.is_dir():
            raise RunDirError(
                f"run dir {self.config.run_dir} of study {self.config.study!r} does not exist on this machine; put it on "
                "a file system every worker shares (it holds best/ and the claim lock), or give its path with --run-dir"
            )
        run_dir = self.config.run_dir = prepare_run_dir(self.config.run_dir)
        self._make_runner(source_configs)
        call_observers("search_start", run_dir=run_dir, study=study, settings={**self.settings(), "worker": True})
        return study

    def _resume(self, study: optuna.Study) -> None:
        """Check the ``best/`` of a study to resume, and split the images with the seed it was created with."""
        check_best_model(study, self.config.run_dir)
        if split_seed(study, self.config.seed) != self.split_seed:
            self.split_seed = split_seed(study, self.config.seed)
            self._prepared.clear()

    def recover(self, study: optuna.Study, exit_reasons: Mapping[int, str] | None = None) -> None:
        """Settle the trials of dead workers (see :mod:`automl_transfer.search.recovery`), then the summary.

        :param exit_reasons: reasons for workers known to have ended, by pid.
        """
        with claim_lock(self.config.run_dir):
            settled = recover_lost_trials(study, self.storage, self.config.run_dir, exit_reasons)
        if settled:
            write_summary(study, self.config.metric, self.config.run_dir)

    def settings(self) -> dict[str, Any]:
        """Return the search's settings as a JSON-ready dict (for observers and reports)."""
        settings = asdict(self.config)
        settings["run_dir"] = str(self.config.run_dir)
        settings["weights_dir"] = None if self.config.weights_dir is None else str(self.config.weights_dir)
        settings["sources"] = list(self.space.sources)  # as trained: after --weights none / --weights-dir
        settings["resolved_device"] = str(self.device)
        return settings

    def prepare(self, image_size: int, interpolation: str) -> PreparedData:
        """Return the dataset decoded at ``image_size``, decoding it at most once per process.

        While images are decoded (not when they come from the run dir's cache) the observers
        hear ``search_phase("decoding images (S px)", done, total)``.
        """
        key = (image_size, interpolation)
        if key not in self._prepared:
            with Phase(f"decoding images ({image_size} px)") as progress:
                self._prepared[key] = prepare_data(
                    self.dataset,
                    image_size,
                    interpolation=interpolation,
                    val_fraction=self.config.val_fraction,
                    seed=self.split_seed,
                    skip_bad_images=self.config.skip_bad_images,
                    cache_dir=self.config.run_dir / CACHE_NAME,
                    fingerprint=self.fingerprint,
                    progress=progress,
                    ahead=self.ahead,
                )
        return self._prepared[key]

    def target(self, study: optuna.Study) -> int:
        """The trial count asked for by the latest ``search`` command (workers follow it)."""
        return target_trials(study, self.config.trials)

    def open_trials(self, study: optuna.Study) -> int:
        """Return how many trials are waiting or not yet claimed."""
        return open_trials(study, self.target(study))

    def finished(self, study: optuna.Study) -> int:
        """Return how many counted trials have finished."""
        return finished_count(study)

    def load_study(self, name: str) -> optuna.Study:
        """Load study ``name`` from the search's storage with the search's sampler and pruner."""
        return optuna.load_study(
            study_name=name, storage=self.storage, sampler=make_sampler(self.config), pruner=make_pruner(self.config)
        )

    def _check_inputs(self) -> tuple[SearchSpace, ImageDataset, dict[str, dict[str, Any]]]:
        """Load plugins, then check the space, the dataset, the devices and every source.

        :returns: the space, the dataset and each source's data config.
        """
        load_plugins()
        space = load_space(self.config.space, origin=f"the space of study {self.config.study!r}")
        self.space = apply_weights_choice(space, self.config.weights, self.config.weights_dir)
        self.dataset = self.ahead.dataset if self.ahead else read_dataset(self.config.dataset)
        self.fingerprint = self.ahead.fingerprint if self.ahead else dataset_fingerprint(self.dataset)
        self.held_out = held_out_data(self.config.test, self.dataset)
        self.devices = worker_devices(self.config.devices, self.config.device)
        self.device = resolve_device(self.devices[0] if self.config.devices else self.config.device)
        return self.space, self.dataset, check_sources(self.space.sources, self.backbones)

    def _make_runner(self, source_configs: dict[str, dict[str, Any]]) -> None:
        """Build the trial runner once the run dir and the storage are known."""
        context = TrialContext(
            space=self.space,
            source_configs=source_configs,
            prepare=self.prepare,
            device=self.device,
            run_dir=self.config.run_dir,
            dataset=self.config.dataset,
            metric=self.config.metric,
            metric_key=self.metric_key,
            direction=self.direction,
            seed=self.config.seed,
            compile_model=self.config.compile,
            build_backbone=self.backbones.build,
        )
        self.runner = TrialRunner(context, self.storage)

    @cached_property
    def content_fingerprint(self) -> str:
        """The dataset's fingerprint by file content (computed once; files decoded here are not read again)."""
        decoded = next((data.file_digests for data in self._prepared.values() if data.file_digests), None)
        return dataset_fingerprint(self.dataset, content=True, digests=decoded)

    def _open_storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.config.run_dir, self.config.storage, self.config.heartbeat_interval)

    def _sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        # Seeded by the trial's number: reproducible, and parallel workers sample different trials.
        return make_sampler(self.config, self.config.seed + trials_so_far)

    def _existing_study(self, identity: SearchIdentity, settled: bool = True) -> tuple[optuna.Study | None, list[str]]:
        """Find the search the run dir already holds (see :func:`~automl_transfer.search.existing.existing_study`)."""
        study, replaced = existing_study(self.storage, self.config, identity, self.load_study,
                                         lambda: self.content_fingerprint, settled)
        if study is not None:
            self.config.study = study.study_name
        return study, replaced

    def _create_study(self, identity: SearchIdentity, replaced: list[str]) -> optuna.Study:
        for name in replaced:
            optuna.delete_study(study_name=name, storage=self.storage)
        if replaced:
            remove_best(self.config.run_dir)
        with optuna_log(quiet=self.config.quiet):  # "A new study created in ..." is Optuna's INFO line
            study = optuna.create_study(
                study_name=self.config.study,
                storage=self.storage,
                direction=self.direction,
                sampler=make_sampler(self.config),
                pruner=make_pruner(self.config),
            )
        write_identity(study, identity)
        order = None
        if self.config.rank_prior and sum(not random_weights(source) for source in self.space.sources) >= 2:
            scores = self._rank()
            write_ranking(study, [score.to_dict() for score in scores])
            order = agreed_order(scores)
        for number, params in enumerate(self.space.start_trials(order)[: self.config.trials]):
            study.enqueue_trial(params, user_attrs={START_POINT: number}, skip_if_exists=True)
        return study

    def rank(self) -> list[SourceScore]:
        """Check the inputs and rank the space's sources by transferability, without a study (``rank``).

        The decoded images and the features are kept in the run dir's cache, where a search
        of the same task finds them.

        :returns: one score per source, best first (see :mod:`automl_transfer.ranking.rank`).
        :raises AutoMLTransferError: bad dataset, space, source, device or run dir.
        """
        self._check_inputs()
        self.config.run_dir = prepare_run_dir(check_run_dir(self.config.run_dir))
        return self._rank()

    def _rank(self) -> list[SourceScore]:
        """Rank the sources; the inputs are checked and the run dir exists."""

        def on_source(done: int, total: int) -> None:
            call_observers("search_phase", phase="ranking the sources by transferability", done=done, total=total)

        return rank_sources(
            self.space.sources,
            self.space.to_dict()["image_size"],
            self.prepare,
            self.backbones.build,
            self.device,
            self.config.run_dir / CACHE_NAME,
            on_source,
        )

