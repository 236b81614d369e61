"""Run dirs outlive releases: a release that adds a setting resumes them, one that changes a default says so.

``tests/data/run-before-settings-table/run`` was made by the release before the settings table
(its space file says how); it records its whole space, defaults filled in, and no format version.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from automl_transfer import TransferSearch
from automl_transfer.contract import trial_settings
from automl_transfer.contract.trial_settings import Bounds, Setting
from automl_transfer.errors import RunDirError
from automl_transfer.search.record import IDENTITY_FORMAT, recorded_identity
from automl_transfer.storage.run_dir import JOURNAL_NAME

FIXTURE = Path(__file__).parent / "data" / "run-before-settings-table"
DATASET = "digits:classes=0-2,per_class=6,size=16"
MIXUP = Setting("mixup", "float", 0.0, "mixup strength; `0` turns it off", Bounds(0.0, 1.0))


def load_study(run_dir: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL_NAME)))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of the run dir the previous release made, and its space file beside it."""
    shutil.copytree(FIXTURE, tmp_path / "old", symlinks=True)
    return tmp_path / "old" / "run"


def search(run_dir: Path, trials: int, space: Path | None = None) -> TransferSearch:
    space = space or run_dir.parent / "space.yaml"
    return TransferSearch(dataset=DATASET, space=str(space), trials=trials, run_dir=run_dir, device="cpu",
                          quiet=True, refit=False)


def with_default(name: str, default: object) -> tuple[Setting, ...]:
    return tuple(dataclasses.replace(s, default=default) if s.name == name else s for s in trial_settings.SETTINGS)


def test_the_previous_releases_run_dir_resumes_with_a_larger_trial_count(old_run: Path) -> None:
    before = [(trial.params, trial.value) for trial in load_study(old_run).trials]
    assert len(before) == 2 and "format" not in recorded_identity(load_study(old_run))
    command = [sys.executable, "-m", "automl_transfer", "search", "--dataset", DATASET, "--space",
               str(old_run.parent / "space.yaml"), "--trials", "3", "--run-dir", str(old_run), "--device", "cpu",
               "--quiet", "--no-refit"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_study(old_run).trials
    assert len(trials) == 3 and [(trial.params, trial.value) for trial in trials[:2]] == before


def test_a_release_that_adds_a_setting_with_an_old_behaviour_default_resumes_old_run_dirs(
    old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trial_settings, "SETTINGS", (*trial_settings.SETTINGS, MIXUP))
    study = search(old_run, 2).open()  # the count is met: it only checks and resumes
    assert len(study.trials) == 2


def test_a_release_that_adds_a_setting_whose_default_changes_what_old_runs_did_refuses(
    old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_by_default = dataclasses.replace(MIXUP, default=0.5, absent=0.0)  # runs before it had no mixup
    monkeypatch.setattr(trial_settings, "SETTINGS", (*trial_settings.SETTINGS, on_by_default))
    with pytest.raises(RunDirError, match=r"different mixup default \(0.0 when it was made, 0.5 in this release; "
                                          r"write `mixup: 0.0` in the space to keep it\); pass --force-new"):
        search(old_run, 3).open()


def test_a_release_that_changes_a_default_refuses_naming_it_and_force_new(
    old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = (old_run / JOURNAL_NAME).read_bytes()
    monkeypatch.setattr(trial_settings, "SETTINGS", with_default("patience", 3))
    with pytest.raises(RunDirError) as refused:
        search(old_run, 3).open()
    message = str(refused.value)
    assert "\n" not in message
    assert "with a different patience default (5 when it was made, 3 in this release; write `patience: 5` in " \
           "the space to keep it); pass --force-new to delete it (2 trial(s) and its best model)" in message
    assert (old_run / JOURNAL_NAME).read_bytes() == journal  # nothing was written
    pinned = old_run.parent / "pinned.yaml"
    pinned.write_text((old_run.parent / "space.yaml").read_text() + "patience: 5\n")
    assert len(search(old_run, 2, pinned).open().trials) == 2  # the old value, written down, resumes


def test_a_new_run_records_what_the_user_wrote_and_the_defaults_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("source: [timm:test_efficientnet@none]\nepochs: 1\nbatch_size: 16\nimage_size: 16\n")
    run_dir = tmp_path / "run"
    identity = recorded_identity(search(run_dir, 1, space).open())
    assert identity["format"] == IDENTITY_FORMAT
    assert set(identity["space"]) == {"source", "epochs", "batch_size", "image_size"}
    assert identity["defaults"]["patience"] == 5 and "patience" not in identity["space"]
    released = trial_settings.SETTINGS
    monkeypatch.setattr(trial_settings, "SETTINGS", (*released, MIXUP))
    assert len(search(run_dir, 1, space).open().trials) == 1  # a new setting at its old-behaviour default
    monkeypatch.setattr(trial_settings, "SETTINGS", with_default("lr", 1e-3))
    with pytest.raises(RunDirError, match=r"different lr default \(\{low: 1.0e-5, high: 0.01, log: true, step: null\} "
                                          r"when it was made, 0.001 in this release"):
        search(run_dir, 1, space).open()
    monkeypatch.setattr(trial_settings, "SETTINGS", released)
    other = tmp_path / "other.yaml"
    other.write_text(space.read_text() + "patience: 2\n")
    with pytest.raises(RunDirError, match="holds study .* with a different space; pass --force-new"):
        search(run_dir, 1, other).open()
