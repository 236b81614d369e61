"""Interruptions: Ctrl-C, SIGKILL of the whole search, and a crash between saving and telling."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from search_processes import (
    DATASET,
    assert_best_matches,
    assert_counted,
    group_ended,
    open_study,
    run,
    search_command,
    trial_in_training,
    wait_for,
    write_space,
)

from automl_transfer import TransferSearch
from automl_transfer.search.signals import interrupt_on_signals, raise_if_stopped
from automl_transfer.storage import checkpoint
from automl_transfer.training.trial import run_trial


@pytest.mark.slow
def test_ctrl_c_records_interrupted_trials_exits_130_and_the_same_command_resumes(tmp_path: Path) -> None:
    space = write_space(tmp_path, epochs=15)
    run_dir = tmp_path / "run"
    command = search_command(space, run_dir, 3, "--workers", "2")
    search = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: trial_in_training(run_dir), 120, "a trial in training")
        search.send_signal(signal.SIGINT)  # to the parent only: it must stop its workers itself
        out, err = search.communicate(timeout=120)
    finally:
        search.kill()
    assert search.returncode == 130, err
    assert f"resume with:\n  automl-transfer {shlex.join(command[3:])}" in err
    assert "Traceback" not in err

    study = open_study(run_dir)
    interrupted = [trial for trial in study.trials if trial.user_attrs.get("fail_reason") == "interrupted"]
    assert interrupted and all(trial.state == TrialState.FAIL for trial in interrupted)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = {trial.user_attrs["retry_of"]: trial for trial in study.get_trials(states=(TrialState.WAITING,))}
    # A worker the stop caught between two trials, claiming one, left it without a process: that
    # trial is re-queued too, under the reason the journal allows.
    assert {trial.number for trial in interrupted} <= set(requeued)
    assert all(study.trials[number].state == TrialState.FAIL and study.trials[number].user_attrs["fail_reason"]
               in ("interrupted", "worker died while claiming the trial") for number in requeued)
    assert (run_dir / "summary.json").is_file()

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr
    study = open_study(run_dir)
    assert_counted(study, 3)
    for trial in interrupted:
        retry = study.trials[requeued[trial.number].number]
        assert retry.state == TrialState.COMPLETE and retry.params == trial.params
    assert_best_matches(run_dir, study)


@pytest.mark.slow
def test_sigkill_of_the_whole_search_then_the_same_command_finishes_it(tmp_path: Path) -> None:
    space = write_space(tmp_path, epochs=15)
    run_dir = tmp_path / "run"
    command = search_command(space, run_dir, 4, "--workers", "2")
    search = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: trial_in_training(run_dir) if (run_dir / "best").exists() else None, 150, "a best model")
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # the parent and its workers, at once
        search.wait()
    wait_for(lambda: group_ended(search.pid) or None, 60, "every process of the search to end")
    before, _ = checkpoint.load_best(run_dir)  # whole, not half-written
    study = open_study(run_dir)
    killed = {trial.number: trial for trial in study.get_trials(states=(TrialState.RUNNING,))}
    finished = {trial.number: (trial.state, trial.value) for trial in study.trials if trial.state.is_finished()}

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr
    study = open_study(run_dir)
    counts = assert_counted(study, 4)
    assert {number: (study.trials[number].state, study.trials[number].value) for number in finished} == finished
    assert killed and counts["n_replaced"] == len(killed) - _completed_from_best(study, killed)
    for number, at_kill in killed.items():
        trial = study.trials[number]
        if "recovered" in trial.user_attrs:  # killed between saving best/ and telling the study
            assert trial.state == TrialState.COMPLETE and trial.value == before["value"]
            continue
        # Where the kill caught the worker decides the reason; what the journal held at the kill tells which.
        expected = (f"worker died (process {at_kill.user_attrs['pid']} on {socket.gethostname()} is gone)"
                    if "pid" in at_kill.user_attrs else "worker died while claiming the trial")
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == expected
        (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == trial.params or not trial.params  # a trial killed before sampling has none yet
    summary = assert_best_matches(run_dir, study)
    assert summary["best_value"] >= before["value"]


def _completed_from_best(study, killed) -> int:
    """How many of the ``killed`` trials were completed from ``best/`` rather than re-run."""
    return sum("recovered" in study.trials[number].user_attrs for number in killed)


def test_a_crash_between_saving_the_best_model_and_telling_the_study_completes_the_trial(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    search = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True)
    study = search.open()
    trial = study.ask()  # what a worker does, up to the moment it dies:
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", gone.pid)
    params = search.runner.suggest(trial)
    trial.set_user_attr("params", params.to_dict())
    trained = run_trial(params, search.prepare, torch.device("cpu"), lambda epoch, metrics: None)
    value = trained.metrics["accuracy"]
    assert checkpoint.save_best_if_better(run_dir, trained.model, search.runner.model_info(trial.number, trained, value),
                                          value, "maximize")
    # ... and here it was killed, before study.tell().

    summary = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True).run()
    study = open_study(run_dir)
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == value
    assert "its model was saved as best" in study.trials[0].user_attrs["recovered"]
    assert_counted(study, 2)
    assert summary == assert_best_matches(run_dir, study)


def test_a_stop_whose_exception_was_swallowed_still_stops_the_search_before_its_next_trial(tmp_path: Path) -> None:
    """A ``KeyboardInterrupt`` lost inside a library must not leave a worker running trials after SIGTERM."""
    search = TransferSearch(dataset=DATASET, space=str(write_space(tmp_path)), trials=2, run_dir=tmp_path / "run",
                            quiet=True)
    study = search.open()
    with interrupt_on_signals() as signals:
        try:
            signal.raise_signal(signal.SIGTERM)  # the handler runs now and raises ...
        except KeyboardInterrupt:
            pass  # ... and something swallows it, as a library's broad handler might
        assert signals.count == 1
        with pytest.raises(KeyboardInterrupt):
            search.work(study)
    assert study.trials == []  # no trial was claimed after the stop
    raise_if_stopped()  # the stop ends with the handler: a later search in this process runs
