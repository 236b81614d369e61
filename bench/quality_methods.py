"""The methods bench/search_quality.py compares: a hand-written loop, our search and its variants.

Every method gets one task instance (a few labelled target digits, a source checkpoint trained
on other digits) and returns the held-out test accuracy of the model it would hand the user,
with the compute it used. The ablations switch one mechanism of issue 8 off by patching the
product inside the benchmark's process, for the duration of one run.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import optuna
import timm
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from automl_transfer import TransferSearch, load_model
from automl_transfer.data.prepare import PreparedData
from automl_transfer.search.refit import refit_epochs
from automl_transfer.training.evaluation import evaluate
from automl_transfer.training.optim import build_lr_schedule, warmup_steps_for
from automl_transfer.training.trainer import BestEpoch, Trainer

#: Trials a search gets (ours, random search and every ablation); "ours, a third" gets a third.
TRIALS = 12
#: Changes to every search space (``--quick`` shortens the trials).
SPACE_CHANGES: dict[str, Any] = {}


@dataclass(frozen=True)
class Instance:
    """One task instance: what to transfer from and to, and its labelled and held-out images."""

    task: str
    shots: int
    seed: int
    target: str  # the digits dataset text of the target
    checkpoint: Path  # the source backbone, trained on the task's source digits
    data: PreparedData  # the target decoded at 32 px: train + val (labelled) and test (held out)


def yardstick(instance: Instance, epochs: int = 10) -> dict[str, Any]:
    """The 20-line loop a user writes instead: AdamW 3e-3, OneCycle, batch 64, 10 epochs, every labelled image.

    :param epochs: its epochs; more give it the compute a search spends (see ``loop_epochs``).
    """
    start = time.perf_counter()
    torch.manual_seed(instance.seed)
    backbone = timm.create_model("test_resnet", num_classes=0)
    saved = load_file(instance.checkpoint)  # a search's best/model.safetensors: backbone.* and head.*
    backbone.load_state_dict({name.removeprefix("backbone."): value for name, value in saved.items() if name.startswith("backbone.")})
    mean, std = (torch.tensor(backbone.pretrained_cfg[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, len(instance.data.class_names)))
    images = torch.cat([instance.data.train.images, instance.data.val.images])
    labels = torch.cat([instance.data.train.labels, instance.data.val.labels])
    batches = math.ceil(len(labels) / 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, epochs=epochs, steps_per_epoch=batches)
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(len(labels)).split(64):
            loss = F.cross_entropy(model((images[rows].float() / 255 - mean) / std), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        test = instance.data.test
        predictions = torch.cat([model((batch.float() / 255 - mean) / std).argmax(1) for batch in test.images.split(512)])
    accuracy = float((predictions == test.labels).float().mean())
    return {"test": accuracy, "images": epochs * len(labels), "seconds": time.perf_counter() - start}


def loop_epochs(labelled: int, images: int) -> int:
    """Epochs that give the hand-written loop about ``images`` training images on ``labelled`` images (10 at least)."""
    return max(10, round(images / labelled))


def space(instance: Instance, **changes: Any) -> dict[str, Any]:
    """The space a user writes for the task: the checkpoint or random weights, freeze depth, lr, regularisation."""
    values = {
        "source": [f"timm:test_resnet@{instance.checkpoint}", "timm:test_resnet@none"],
        "image_size": 32,
        "freeze_depth": {"low": 0.0, "high": 1.0},
        "lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
        "weight_decay": {"low": 1.0e-3, "high": 0.1, "log": True},
        "l2sp": [0.0, 0.01, 0.1],
        "head": "linear",
        "epochs": 10,
        "batch_size": 16,
    }
    values.update(SPACE_CHANGES)
    values.update(changes)
    return values


def search(instance: Instance, run_dir: Path, variant: str) -> dict[str, Any]:
    """Run our search in ``variant`` (see :data:`VARIANTS`) on ``instance`` and score what it saved."""
    settings = VARIANTS[variant]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space(instance, **settings.get("space", {}))))
    start = time.perf_counter()
    with contextlib.ExitStack() as patches:
        patches.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the leaderboards: the table says it all
        for patch in settings.get("patches", ()):
            patches.enter_context(patch())
        summary = TransferSearch(
            dataset=instance.target, space=str(run_dir / "space.yaml"), trials=settings.get("trials", max(1, TRIALS)),
            run_dir=run_dir, quiet=True, seed=instance.seed, device="cpu", sampler=settings.get("sampler", "tpe"),
            pruner=settings.get("pruner", "hyperband"), refit=settings.get("refit", True), val_fraction=0.2,
        ).run()
    seconds = time.perf_counter() - start
    model = load_model(run_dir, device="cpu").model
    accuracy = evaluate(model, instance.data.test, torch.device("cpu"), batch_size=512)["accuracy"]
    images = trial_images(run_dir, summary, len(instance.data.train))
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"test": accuracy, "images": images, "seconds": seconds, "best_trial": summary["best_trial"]}


def trial_images(run_dir: Path, summary: dict[str, Any], train_size: int) -> int:
    """Training images the search processed: every epoch of every trial, plus the refit's and the cross-check's (estimated).

    A refit trains ``refit["epochs"]`` epochs on ``refit["train_images"]`` images; its epochs
    are counted as the best trial's, scaled by how many more images it had. A cross-check trains
    each finalist once per fold, its refit epochs on all but one fold of those images.
    """
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    images = sum(
        value.get("train_images", 0)
        for trial in trials
        for key, value in trial.user_attrs.items()
        if key.startswith("epoch_")
    )
    refit = summary.get("refit")
    if refit:
        per_epoch = trials[refit["trial"]].user_attrs["epoch_1"]["train_images"]
        images += round(refit["epochs"] * per_epoch * refit["train_images"] / train_size)
        check = summary.get("cross_check")
        for finalist in check["finalists"] if check else ():
            trial = trials[finalist["trial"]]
            fold_train = refit["train_images"] * (check["folds"] - 1) / check["folds"]
            images += round(check["folds"] * refit_epochs(trial) * trial.user_attrs["epoch_1"]["train_images"]
                            * fold_train / train_size)
    return images


class _DropLastTrainer(Trainer):
    """The trainer of the previous version: batches of exactly ``batch_size``, the remainder dropped."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        size, batch = len(self.train_split), self.settings.batch_size
        self.steps_per_pass = max(1, size // batch)
        self.passes = max(1, math.ceil(self.settings.min_steps / (self.steps_per_pass * self.settings.epochs)))
        self.steps_per_epoch = self.steps_per_pass * self.passes
        total = self.steps_per_epoch * self.settings.epochs
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.schedule = build_lr_schedule(
            self.optimizer, total, warmup_steps_for(self.settings.warmup_epochs, self.steps_per_epoch, total)
        )

    def _batches(self) -> Iterator[torch.Tensor]:
        batch = min(self.settings.batch_size, len(self.train_split))
        for _ in range(self.passes):
            order = self.train_split.permutation(self.order_generator)
            for step in range(self.steps_per_pass):
                yield order[step * batch : (step + 1) * batch]


def keep_the_last_epoch(self: BestEpoch, epoch: int, metrics: dict[str, float], model: torch.nn.Module) -> None:
    """``BestEpoch.update`` that takes every epoch as the best: a fit ends with its last epoch (an ablation)."""
    self.epoch = epoch


def _old_pruner(config: Any) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")


#: Our search and its ablations: each switches one mechanism of issue 8 off.
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "ours, a third of the trials": {"trials": TRIALS // 3},
    "random search, no pruning": {"sampler": "random", "pruner": "none", "space": {"start": []}},
    "ours without 1 (images dropped, no refit)": {
        "refit": False,
        "patches": [lambda: mock.patch("automl_transfer.training.fit.Trainer", _DropLastTrainer)],
    },
    "ours without 2 (no early stopping, last epoch kept)": {
        "space": {"patience": 0},
        "patches": [lambda: mock.patch.object(BestEpoch, "update", keep_the_last_epoch)],
    },
    "ours without 3 (no start points)": {"space": {"start": []}},
    "ours without 4 (Hyperband judges from epoch 1)": {
        "patches": [lambda: mock.patch("automl_transfer.search.search.make_pruner", _old_pruner)],
    },
    "ours without 5 (0.1 space: strong crops, no min steps, random weights frozen)": {
        "space": {"augment": "strong", "min_steps": 0, "label_smoothing": 0.1},
        "patches": [lambda: mock.patch("automl_transfer.space.space.random_weights", lambda source: False)],
    },
}


def set_trials(trials: int, space_changes: dict[str, Any] | None = None) -> None:
    """Give every search ``trials`` trials (a third to "ours, a third of the trials") and change every space."""
    global TRIALS
    TRIALS = trials
    VARIANTS["ours, a third of the trials"]["trials"] = max(1, trials // 3)
    SPACE_CHANGES.update(space_changes or {})
