"""The settings of a search, checked once, and the Optuna sampler and pruner they name.

Optuna is imported when a sampler or pruner is made, not when this module is, so the CLI can
build its parser without it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Union

from automl_transfer.errors import AutoMLTransferError
from automl_transfer.storage.backends import HEARTBEAT_INTERVAL

if TYPE_CHECKING:
    import optuna

#: The objective each ``--metric`` reads from an epoch's metrics, and its direction.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "maximize"),
    "macro_f1": ("macro_f1", "maximize"),
    "loss": ("val_loss", "minimize"),
}
PRUNERS = ("hyperband", "median", "none")
SAMPLERS = ("tpe", "random")


@dataclass
class SearchConfig:
    """Everything a search needs; each field is also a CLI flag and a job-YAML key.

    :param dataset: ``PLUGIN[:LOCATION]``, e.g. ``imagefolder:data/pets`` or ``digits``.
    :param space: a preset name (``small``, ``default``, ``demo``), a YAML path, or a
        search-space mapping (as a study's record holds it, for workers).
    :param trials: how many trials the study should hold when done (earlier runs count).
    :param timeout: stop starting new trials after this many seconds (``None``: no limit).
    :param run_dir: where the study, best model and summary live (default ``runs/<study>``).
    :param study: the Optuna study name (default: derived from dataset and space).
    :param storage: an RDB URL for multi-machine searches; default the run dir's journal file.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param seed: seeds the sampler and training, and the validation split of a new search (a
        resumed one keeps the split it was created with).
    :param metric: ``accuracy``, ``macro_f1`` or ``loss``.
    :param pruner: ``hyperband``, ``median`` or ``none``.
    :param sampler: ``tpe`` (multivariate) or ``random``.
    :param val_fraction: the share of each class held out for validation when the dataset
        has no validation split of its own.
    :param skip_bad_images: skip and count unreadable images instead of stopping.
    :param compile: ``torch.compile`` the model on CUDA.
    :param force_new: replace a study in the run dir that holds a different dataset or space.
    :param quiet: no plan, trial or epoch lines, no leaderboard, no Optuna log lines.
    :param workers: worker processes that run trials in parallel on this machine (1: trials
        run in this process; 0: only check the inputs and record the search, for
        ``automl-transfer worker`` processes started elsewhere, e.g. on a cluster).
    :param devices: the workers' devices, comma-separated (``cuda:0,cuda:1``), given out
        round-robin; default ``device`` for all (``auto`` with several GPUs: all of them).
    :param heartbeat_interval: seconds between the heartbeats of a running trial in an RDB
        storage; a trial silent for three intervals is failed and re-queued.
    :param refit: after the trials, train the winning configuration again on training and
        validation images together for its best number of epochs and keep that as ``best/``
        (``False``: keep the selected trial's own model).
    :param cross_check: before the refit, score this many of the best trials by stratified
        ``folds``-fold cross-validation on every labelled image and keep the best mean
        (:mod:`automl_transfer.search.cross_check`); 0: the validation score alone decides.
        Only with ``refit``: the winner's weights come from its refit.
    :param folds: the folds of ``cross_check``.
    :param rank_prior: when the study is created, rank the sources by transferability and
        run their start points best first (``False``: in the space's order, no ranking). A
        space with fewer than two pretrained sources has nothing to order and is not ranked.
    :param weights: ``"none"`` starts every source of the space from random weights (no
        download); ``None`` or ``"pretrained"``: the weights the space names.
    :param weights_dir: a folder of ``MODEL.safetensors`` files (``MODEL.TAG.safetensors``
        for ``@TAG`` sources) that sources with pretrained weights start from when their file is there.
    :param test: a dataset ``PLUGIN[:LOCATION]`` to score the final best model on (its test
        split, or all its images); default the search dataset's own test split, if any.
    """

    dataset: str
    space: Union[str, Mapping[str, Any]] = "small"
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
    workers: int = 1
    devices: str | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    refit: bool = True
    cross_check: int = 0
    folds: int = 3
    rank_prior: bool = True
    weights: str | None = None
    weights_dir: Path | None = None
    test: str | None = None

    def __post_init__(self) -> None:
        if self.trials is None or int(self.trials) < 1:
            raise AutoMLTransferError(f"--trials must be a positive number, not {self.trials}")
        if self.workers is None or int(self.workers) < 0:
            raise AutoMLTransferError(f"--workers must be 0 (only record the search) or more, not {self.workers}")
        if self.heartbeat_interval is None or int(self.heartbeat_interval) < 1:
            raise AutoMLTransferError(f"--heartbeat-interval must be at least 1 second, not {self.heartbeat_interval}")
        self.workers = int(self.workers)
        if self.cross_check is None or int(self.cross_check) < 0 or int(self.cross_check) == 1:
            raise AutoMLTransferError(
                f"--cross-check must be 0 (off) or 2 or more finalists to choose between, not {self.cross_check}"
            )
        if self.folds is None or int(self.folds) < 2:
            raise AutoMLTransferError(f"--folds must be at least 2, not {self.folds}")
        if int(self.cross_check) and not self.refit:
            raise AutoMLTransferError("--cross-check needs the refit (it keeps the winner's refit): drop --no-refit")
        self.cross_check, self.folds = int(self.cross_check), int(self.folds)
        self.heartbeat_interval = int(self.heartbeat_interval)
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
        if not self.study:
            self.study = default_study_name(self.dataset, self.space if isinstance(self.space, str) else "space")
            self.study += "-random-init" if self.weights == "none" else ""
        self.run_dir = Path(self.run_dir) if self.run_dir else Path("runs") / self.study


def default_study_name(dataset: str, space: str) -> str:
    """Derive a file-name-safe study name from a dataset spec and a space name or path."""
    space_name = Path(space).stem if space.endswith((".yaml", ".yml")) else space
    dataset_name = Path(dataset.replace(":", "-")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset_name}-{space_name}").strip("-.") or "search"


@contextlib.contextmanager
def optuna_log(quiet: bool) -> Iterator[None]:
    """Keep Optuna's INFO log lines quiet inside the block when ``quiet``; its verbosity is restored after."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def make_sampler(config: SearchConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """Return the sampler ``config.sampler`` names: multivariate, grouped TPE or random search.

    :param seed: the sampler's seed (default ``config.seed``).
    """
    import optuna

    seed = config.seed if seed is None else seed
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    """Return the pruner ``config.pruner`` names; epochs are its steps.

    Hyperband and the median rule never judge a trial inside its warm-up
    (:class:`~automl_transfer.search.pruning.AfterWarmup`).
    """
    import optuna

    from automl_transfer.search.pruning import AfterWarmup

    if config.pruner == "hyperband":
        return AfterWarmup(optuna.pruners.HyperbandPruner(min_resource=2, max_resource="auto"))
    if config.pruner == "median":
        return AfterWarmup(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3))
    return optuna.pruners.NopPruner()
