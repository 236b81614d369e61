"""Helpers for the tests that run real search and worker processes on one run dir."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_transfer.search.counting import trial_counts
from automl_transfer.storage.backends import open_storage
from automl_transfer.storage.checkpoint import load_best

CLI = [sys.executable, "-m", "automl_transfer"]
DATASET = "digits:classes=0-2,per_class=20,size=16"
SPACE = """\
source: [timm:test_resnet@none]
head: linear
lr: {low: 1.0e-3, high: 1.0e-2, log: true}
epochs: %(epochs)d
batch_size: 16
image_size: 16
start: []
"""
T = TypeVar("T")


def write_space(folder: Path, epochs: int = 2) -> Path:
    """Write a one-backbone space whose trials take about ``epochs`` tenths of a second each."""
    path = folder / "space.yaml"
    path.write_text(SPACE % {"epochs": epochs})
    return path


def search_command(space: Path, run_dir: Path, trials: int, *extra: str) -> list[str]:
    """Return the argument list of ``automl-transfer search`` on :data:`DATASET`."""
    return [*CLI, "search", "--dataset", DATASET, "--space", str(space), "--trials", str(trials),
            "--run-dir", str(run_dir), "--pruner", "none", *extra]


def run(command: list[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """Run a command to its end, capturing its output as text."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def open_study(run_dir: Path, storage: str | None = None, name: str | None = None) -> optuna.Study:
    """Load the one study of ``run_dir`` (or ``name`` from ``storage``)."""
    backend = open_storage(run_dir, storage)
    if name is None:
        (name,) = optuna.get_all_study_names(backend)
    return optuna.load_study(study_name=name, storage=backend)


def wait_for(find: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``find`` until it returns something other than ``None``, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for {what}")


def group_ended(group: int) -> bool:
    """Tell whether every process of process group ``group`` has exited (a zombie has: it runs no code)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process exited while we looked
            continue
        state, _, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            return False
    return True


def trial_in_training(run_dir: Path, max_epochs_done: int = 3) -> FrozenTrial | None:
    """A running trial that has started training but has many epochs to go, if any.

    Its parameters are recorded and at most ``max_epochs_done`` epochs are, so a signal sent
    now reaches it mid-trial (the spaces here train for many more epochs).
    """
    if not (run_dir / "study.journal").is_file():
        return None
    try:
        trials = open_study(run_dir).get_trials(states=(TrialState.RUNNING,))
    except ValueError:  # the study is not created yet
        return None
    for trial in trials:
        epochs_done = sum(key.startswith("epoch_") for key in trial.user_attrs)
        if "params" in trial.user_attrs and epochs_done <= max_epochs_done:
            return trial
    return None


def assert_counted(study: optuna.Study, trials: int) -> dict[str, int]:
    """Check that exactly ``trials`` trials finished and none is left running or waiting."""
    counts = trial_counts(study)
    assert counts["n_complete"] + counts["n_pruned"] + counts["n_failed"] == trials, counts
    assert counts["n_running"] == counts["n_waiting"] == 0, counts
    numbers = [trial.number for trial in study.trials]
    assert numbers == list(range(len(numbers)))
    return counts


def assert_best_matches(run_dir: Path, study: optuna.Study) -> dict:
    """Check that ``best/`` loads whole and agrees with ``summary.json`` and the study's best trial."""
    info, state = load_best(run_dir)
    assert state and all(key.startswith(("backbone.", "head.")) for key in state)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_trial"] == info["trial"]
    assert summary["best_value"] == info["value"] == study.best_value
    best = study.trials[info["trial"]]
    assert best.state == TrialState.COMPLETE and best.value == study.best_value
    assert info["params"] == best.user_attrs["params"]
    return summary
