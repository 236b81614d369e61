"""A damaged best model: one error line that says how to recover, and nothing recorded lost.

The faults are made with real files and processes: model.json overwritten, model.safetensors
deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_processes import CLI, DATASET, assert_best_matches, assert_counted, open_study, run, search_command, write_space

from automl_transfer import TransferSearch
from automl_transfer.errors import RunDirError
from automl_transfer.storage import checkpoint


def finished_trials(run_dir: Path) -> dict[int, tuple]:
    return {t.number: (t.state, t.value, t.params) for t in open_study(run_dir).trials if t.state.is_finished()}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-trial search: its space file and its run dir (copy it before damaging it)."""
    root = tmp_path_factory.mktemp("finished")
    space = write_space(root)
    assert run(search_command(space, root / "run", 2)).returncode == 0
    return space, root / "run"


def copy_run(finished_search, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_search[1], run_dir, symlinks=True)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["model.json overwritten", "model.safetensors deleted"])
def test_a_damaged_best_model_stops_search_and_predict_until_repair_rebuilds_it(finished_search, tmp_path, damage):
    space, _ = finished_search
    run_dir = copy_run(finished_search, tmp_path)
    best_dir = (run_dir / "best").resolve()
    if damage == "model.json overwritten":
        (best_dir / "model.json").write_text('{"format_version": 1, "source": ')
    else:
        (best_dir / "model.safetensors").unlink()
    before = finished_trials(run_dir)
    journal = (run_dir / "study.journal").read_bytes()

    refused = run(search_command(space, run_dir, 3))
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: the best model of {run_dir} is damaged: ")
    assert f"run `automl-transfer repair {run_dir}` to retrain trial" in line
    assert (run_dir / "study.journal").read_bytes() == journal  # refused before writing anything
    predicted = run([*CLI, "predict", str(run_dir), str(Path(__file__).parent / "data" / "digit.png")])
    assert predicted.returncode == 2 and len(predicted.stderr.splitlines()) == 1
    assert f"automl-transfer repair {run_dir}" in predicted.stderr and "Traceback" not in predicted.stderr

    repaired = run([*CLI, "repair", str(run_dir), "--device", "cpu"])
    assert repaired.returncode == 0, repaired.stderr
    assert "retrained trial" in repaired.stdout
    (kept,) = run_dir.glob("best.damaged-*")
    assert (kept / "model.json").is_file()  # the damaged files are kept for a look
    assert finished_trials(run_dir) == before  # the study is not changed by the repair
    assert_best_matches(run_dir, open_study(run_dir))  # retrained with the same params and seed: the same value

    resumed = run(search_command(space, run_dir, 3))
    assert resumed.returncode == 0, resumed.stderr
    study = open_study(run_dir)
    assert {n: v for n, v in finished_trials(run_dir).items() if n in before} == before
    assert_counted(study, 3)
    assert_best_matches(run_dir, study)


def test_best_model_damaged_during_a_search_fails_the_trial_requeues_it_and_stops(tmp_path: Path) -> None:
    settings = dict(dataset=DATASET, space=str(write_space(tmp_path)), run_dir=tmp_path / "run", quiet=True, device="cpu")
    TransferSearch(trials=1, **settings).run()  # trial 0 saves best/
    search = TransferSearch(trials=3, **settings)
    study = search.open()
    (checkpoint.resolve_best_dir(tmp_path / "run") / "model.json").write_text("[not json")  # while it runs
    with pytest.raises(RunDirError, match=r"cannot save the best model of trial 1: .*model.json is not valid JSON"):
        search.work(study)
    study = open_study(tmp_path / "run")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["fail_reason"].startswith("best model not saved: ")
    assert study.trials[2].user_attrs["retry_of"] == 1
    assert study.trials[2].system_attrs["fixed_params"] == study.trials[1].params  # re-queued as it was
