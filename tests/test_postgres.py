"""The multi-machine storage: Optuna's RDBStorage on a real PostgreSQL server, with heartbeats.

``.ci/run`` starts a throw-away server and sets ``AUTOML_TRANSFER_TEST_POSTGRES_URL``; without
it these tests are skipped. To run them by hand::

    AUTOML_TRANSFER_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/automl_transfer_test pytest tests/test_postgres.py
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

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
    write_space,
)

from automl_transfer import TransferSearch
from automl_transfer.storage.backends import GRACE_INTERVALS

URL = os.environ.get("AUTOML_TRANSFER_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server: set AUTOML_TRANSFER_TEST_POSTGRES_URL (.ci/run starts one and sets it)"
)


def unique_study() -> str:
    return f"pg-{uuid.uuid4().hex[:12]}"


def test_workers_on_postgres_finish_exactly_the_requested_trials(tmp_path: Path) -> None:
    space = write_space(tmp_path, epochs=6)
    run_dir, name = tmp_path / "run", unique_study()
    command = search_command(space, run_dir, 3, "--workers", "2", "--storage", URL, "--study", name)
    result = run([*command, "--heartbeat-interval", "1"])
    assert result.returncode == 0, result.stderr
    assert not (run_dir / "study.journal").exists()
    study = open_study(run_dir, URL, name)
    assert_counted(study, 3)
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)
    assert_best_matches(run_dir, study)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_silent_machines_trial_fails_by_heartbeat_and_a_joining_worker_reruns_it(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    run_dir, name = tmp_path / "run", unique_study()
    search = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, storage=URL, study=name,
                            heartbeat_interval=1, quiet=True)
    study = search.open()
    trial = study.ask()  # claimed by a machine that then went silent
    trial.set_user_attr("host", "a-machine-that-died")
    trial.set_user_attr("pid", 4242)
    params = search.space.suggest(trial)
    search.storage.record_heartbeat(trial._trial_id)
    time.sleep(GRACE_INTERVALS * 1 + 1)

    # Another machine joins with the storage URL and the study name only; the run dir is the recorded one.
    worker = run([*CLI, "worker", "--storage", URL, "--study", name, "--device", "cpu"], cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    study = open_study(run_dir, URL, name)
    lost = study.trials[0]
    assert lost.state == TrialState.FAIL
    assert lost.user_attrs["fail_reason"] == "worker lost (no heartbeat from a-machine-that-died for 3 s)"
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == lost.params
    assert retry.user_attrs["params"]["lr"] == pytest.approx(params["lr"])
    assert_counted(study, 2)
    assert_best_matches(run_dir, study)
