"""The public worker API: ``automl_transfer.work`` and ``join_search`` run a recorded search from Python."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import automl_transfer
from automl_transfer import AutoMLTransferError, TransferSearch

DATASET = "digits:classes=0-2,per_class=6,size=16"
SPACE = "source: [timm:test_efficientnet@none]\nlr: {low: 1.0e-3, high: 1.0e-2, log: true}\nepochs: 1\nbatch_size: 16\nimage_size: 16\n"


def test_work_and_join_search_are_exported_and_documented() -> None:
    assert {"work", "join_search"} <= set(automl_transfer.__all__)
    for function in (automl_transfer.work, automl_transfer.join_search):
        assert ":returns:" in function.__doc__ and ":raises AutoMLTransferError:" in function.__doc__


def test_a_worker_started_from_python_runs_a_recorded_search_to_its_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=3, run_dir=run_dir, device="cpu", quiet=True,
                   workers=0).run()  # records the search, runs no trial: the scheduler's workers will
    monkeypatch.chdir(tmp_path.parent)  # a worker elsewhere: everything it needs comes from the record
    search, study = automl_transfer.join_search(run_dir=run_dir, device="cpu", quiet=True)
    assert len(study.trials) == 1 and search.target(study) == 3  # the enqueued start point only
    assert automl_transfer.work(run_dir=run_dir, device="cpu", quiet=True) == 3
    assert automl_transfer.work(run_dir=run_dir, device="cpu", quiet=True) == 3  # a late worker finds nothing
    assert (run_dir / "best" / "model.json").is_file()
    assert os.getcwd() == str(tmp_path.parent)


def test_a_worker_for_a_search_that_was_never_recorded_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(AutoMLTransferError, match="no search|study.journal"):
        automl_transfer.work(run_dir=tmp_path, device="cpu")
