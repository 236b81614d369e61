"""Parallel workers: real ``automl-transfer`` processes drawing trials from one run dir's study."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_processes import (
    CLI,
    DATASET,
    assert_best_matches,
    assert_counted,
    open_study,
    run,
    search_command,
    trial_in_training,
    wait_for,
    write_space,
)
from torch import nn

from automl_transfer import TransferSearch, load_model
from automl_transfer.model.network import TransferModel
from automl_transfer.search.counting import trial_counts
from automl_transfer.search.recovery import (
    process_gone,
    process_record,
    recover_lost_trials,
    settle_lost_trial,
)
from automl_transfer.search.summary import build_summary
from automl_transfer.storage.backends import open_storage
from automl_transfer.storage.checkpoint import save_best


def test_two_workers_finish_exactly_the_requested_trials_and_agree_on_the_best(tmp_path: Path) -> None:
    space = write_space(tmp_path, epochs=8)
    run_dir = tmp_path / "run"
    study = TransferSearch(dataset=DATASET, space=str(space), trials=4, run_dir=run_dir, quiet=True).open()
    for _ in range(2):  # the same parameters and seed: two trials that tie, racing to save their model
        study.enqueue_trial({"lr": 3e-3}, user_attrs={"seed_trial": 0})
    result = run(search_command(space, run_dir, 4, "--workers", "2"))
    assert result.returncode == 0, result.stderr
    study = open_study(run_dir)
    assert_counted(study, 4)
    assert len(study.trials) == 4 and all(trial.state == TrialState.COMPLETE for trial in study.trials)
    assert len({trial.user_attrs["pid"] for trial in study.trials}) == 2  # both workers ran trials
    assert study.trials[2].params["lr"] != study.trials[3].params["lr"]  # and sampled different ones
    summary = assert_best_matches(run_dir, study)
    assert load_model(run_dir, device="cpu").info["trial"] == summary["best_trial"]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_only_that_trial_which_runs_again(tmp_path: Path) -> None:
    space = write_space(tmp_path, epochs=15)
    run_dir = tmp_path / "run"
    search = subprocess.Popen(search_command(space, run_dir, 4, "--workers", "2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        victim = wait_for(lambda: trial_in_training(run_dir), 120, "a trial in training")
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)
        out, err = search.communicate(timeout=240)
    finally:
        search.kill()
    assert search.returncode == 0, err
    study = open_study(run_dir)
    lost = study.trials[victim.number]
    assert lost.state == TrialState.FAIL
    # The supervisor names the signal; a worker claiming first finds the process gone. Both are right.
    assert lost.user_attrs["fail_reason"] in {
        "worker died (signal 9 SIGKILL)",
        f"worker died (process {victim.user_attrs['pid']} on {victim.user_attrs['host']} is gone)",
    }
    (retry,) = [trial for trial in study.trials if trial.user_attrs.get("retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == lost.params
    assert retry.user_attrs["worker_deaths"] == 1 and retry.user_attrs["pid"] != lost.user_attrs["pid"]
    counts = assert_counted(study, 4)
    assert counts["n_replaced"] == 1 and len(study.trials) == 5
    assert_best_matches(run_dir, study)


def test_worker_command_joins_a_search_from_another_directory(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    recorded = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, workers=0, quiet=True).run()
    assert recorded["n_complete"] == 0 and not open_study(run_dir).trials  # --workers 0: checked and recorded only
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run([*CLI, "worker", "--run-dir", str(run_dir), "--device", "cpu", "--threads", "1"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    study = open_study(run_dir)
    assert_counted(study, 2)
    assert_best_matches(run_dir, study)


def test_of_equally_good_trials_the_summary_names_the_one_whose_model_was_saved(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(tmp_path), study_name="ties", direction="maximize")
    for number in range(3):
        study.add_trial(optuna.create_trial(value=[0.5, 0.9, 0.9][number], params={}, distributions={},
                                            user_attrs={"params": {"trial": number}}))
    model = TransferModel(nn.Linear(4, 4), nn.Linear(4, 2), [0.5] * 3, [0.5] * 3)
    info = {"source": "timm:x@none", "backbone_plugin": "timm", "architecture": "x", "head": "linear",
            "head_params": {}, "num_classes": 2, "class_names": ["a", "b"], "params": {"trial": 2},
            "preprocessing": {"image_size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
            "metric": "accuracy", "value": 0.9, "trial": 2, "dataset": "digits"}
    save_best(tmp_path, model, info)  # trial 2 finished first and won the race; trial 1 tied later
    summary = build_summary(study, "accuracy", tmp_path)
    assert (summary["best_trial"], summary["best_value"], summary["best_params"]) == (2, 0.9, {"trial": 2})
    assert build_summary(study, "accuracy")["best_trial"] == 1  # without a run dir: Optuna's choice


def test_process_records_tell_a_live_process_from_a_dead_zombie_or_reused_pid() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        record = process_record(child.pid)
        assert not process_gone(record)
        assert process_gone({**record, "pid_start": record["pid_start"] + 1})  # the pid now names another process
        assert not process_gone({**record, "host": "another-machine"})  # unknowable from here
        child.kill()
        wait_for(lambda: process_gone(record) or None, 10, "the killed child to become a zombie")
    finally:
        child.kill()
        child.wait()
    assert process_gone(record)
    assert not process_gone(process_record())


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lost_trial_is_failed_and_requeued_once_and_the_count_holds(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="lost")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", dead_pid())
    assert recover_lost_trials(study, storage, tmp_path) == [(0, "retried")]
    lost, retry = study.get_trials()
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"].startswith("worker died (process")
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0
    assert trial_counts(study) == {"n_complete": 0, "n_pruned": 0, "n_failed": 0, "n_running": 0,
                                   "n_waiting": 1, "n_replaced": 1, "n_taken": 1}

    again = study.ask()  # pops the retry, with the same parameters
    assert again.number == 1 and again.suggest_float("x", 0.0, 1.0) == lost.params["x"]
    again.set_user_attr("host", socket.gethostname())
    again.set_user_attr("pid", dead_pid())
    assert recover_lost_trials(study, storage, tmp_path) == [(1, "failed")]  # a second death: no more retries
    assert len(study.trials) == 2 and trial_counts(study)["n_failed"] == 1

    interrupted = study.ask()
    interrupted.set_user_attr("worker_deaths", 1)
    assert settle_lost_trial(study, storage, 2, "interrupted", tmp_path, died=False) == "retried"
    assert study.trials[3].user_attrs["retry_of"] == 2 and study.trials[3].user_attrs["worker_deaths"] == 1


def test_a_running_trial_of_a_live_worker_is_left_alone(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="alive")
    trial = study.ask()
    for key, value in process_record().items():
        trial.set_user_attr(key, value)
    claimed_elsewhere = study.ask()
    claimed_elsewhere.set_user_attr("host", "another-machine")
    claimed_elsewhere.set_user_attr("pid", 1)
    assert recover_lost_trials(study, storage, tmp_path) == []
    assert [trial.state for trial in study.trials] == [TrialState.RUNNING, TrialState.RUNNING]


@pytest.mark.slow
def test_on_a_terminal_workers_print_trial_lines_on_stderr_and_no_progress_bars(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    parent, child = pty.openpty()
    search = subprocess.Popen(search_command(space, tmp_path / "run", 3, "--workers", "2"), stdout=subprocess.PIPE,
                              stderr=child, text=True, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(child)
    terminal: list[bytes] = []
    reader = threading.Thread(target=lambda: terminal.extend(iter(lambda: _read(parent), b"")))
    reader.start()
    out, _ = search.communicate(timeout=240)
    reader.join(timeout=60)
    os.close(parent)
    assert search.returncode == 0
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(terminal).decode()).replace("\r", "\n")
    assert sorted(re.findall(r"^trial (\d+): accuracy=", shown, flags=re.M)) == ["0", "1", "2"]
    assert not re.search(r"^trials\b", shown, flags=re.M)  # no worker draws a bar over the trials
    assert "trial 0:" not in out and "Leaderboard" in out


def _read(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 4096)
    except OSError:  # the terminal's other end closed
        return b""


def test_two_searches_started_together_on_a_fresh_run_dir_share_one_study(tmp_path: Path) -> None:
    space, run_dir = write_space(tmp_path, epochs=1), tmp_path / "run"
    command = search_command(space, run_dir, 3)
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    for process, (_, err) in zip((first, second), outputs):
        # Whichever creates the study, the other joins it: both finish, neither with a traceback.
        assert process.returncode == 0 and "Traceback" not in err, err
    study = open_study(run_dir)  # one study in the journal
    assert_counted(study, 3)
    assert_best_matches(run_dir, study)
