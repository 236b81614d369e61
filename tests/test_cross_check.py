"""Cross-checking the finalists: stratified folds, the winner by mean fold score, and a resume that reuses both."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from search_processes import open_study

from automl_transfer import TransferSearch
from automl_transfer.errors import AutoMLTransferError
from automl_transfer.reporting.leaderboard import leaderboard
from automl_transfer.search import cross_check as cross_check_module
from automl_transfer.search.cross_check import stratified_folds
from automl_transfer.search.finalists import FOLDS_ATTR, SCORES_ATTR
from automl_transfer.storage.checkpoint import read_best_info

DATASET = "digits:classes=0-2,per_class=16,size=16"
SPACE = """
source: [timm:test_resnet@none]
lr: {low: 1.0e-3, high: 1.0e-2, log: true}
epochs: 2
batch_size: 16
image_size: 16
augment: false
start: []
"""


def test_folds_are_disjoint_stratified_and_seeded():
    labels = [0] * 13 + [1] * 7 + [2] * 5 + [3] * 2
    assignment = stratified_folds(labels, 3, seed=4)
    assert len(assignment) == len(labels) and set(assignment) == {0, 1, 2}  # each image in exactly one fold
    for label in set(labels):
        per_fold = Counter(fold for fold, owner in zip(assignment, labels) if owner == label)
        assert max(per_fold.values()) - min(per_fold.get(fold, 0) for fold in range(3)) <= 1, label
    sizes = Counter(assignment)
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert stratified_folds(labels, 3, seed=4) == assignment
    assert stratified_folds(labels, 3, seed=5) != assignment
    with pytest.raises(AutoMLTransferError, match="between 2 and the 27 labelled images"):
        stratified_folds(labels, 28, seed=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"cross_check": 1}, "2 or more finalists"), ({"cross_check": 2, "refit": False}, "needs the refit"),
     ({"cross_check": 2, "folds": 1}, "at least 2")],
)
def test_bad_cross_check_settings_are_refused_before_anything_runs(tmp_path, fields, message):
    with pytest.raises(AutoMLTransferError, match=message):
        TransferSearch(dataset=DATASET, space="small", run_dir=tmp_path / "run", quiet=True, **fields)
    assert not (tmp_path / "run").exists()


def test_the_finalist_with_the_best_mean_fold_score_is_refit_into_best_and_a_resume_trains_no_fold_twice(
    tmp_path, monkeypatch
):
    """Fold scores that favour the second finalist make it the kept model; recorded folds and scores are reused."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    calls: list[tuple[int, int]] = []

    def scored(runner, trial, params, everything, assignment, fold, base_seed):
        """Fold scores that favour the second finalist (the last test trains folds for real)."""
        calls.append((trial.number, fold))
        return 0.9 if trial.number == second else 0.5

    run_dir = tmp_path / "run"
    search = dict(dataset=DATASET, space=str(space), trials=3, run_dir=run_dir, quiet=True, cross_check=2, folds=3)
    monkeypatch.setattr(cross_check_module, "_fold_score", scored)
    # The second finalist by validation score is known only after the trials: run them first, no cross-check.
    TransferSearch(**{**search, "cross_check": 0, "refit": False}).run()
    study = open_study(run_dir)
    complete = sorted((trial for trial in study.trials if trial.value is not None),
                      key=lambda t: (-t.value, t.user_attrs["metrics"]["val_loss"], t.number))
    second = complete[1].number

    summary = TransferSearch(**search).run()
    assert sorted(calls) == sorted((trial.number, fold) for trial in complete[:2] for fold in range(3))
    record = summary["cross_check"]
    assert record["folds"] == 3 and [entry["trial"] for entry in record["finalists"]] == [complete[0].number, second]
    assert record["finalists"][1] == {"trial": second, "value": complete[1].value, "mean": 0.9, "spread": 0.0,
                                      "scores": [0.9, 0.9, 0.9]}
    assert summary["best_trial"] == second and summary["refit"]["trial"] == second
    assert read_best_info(run_dir)["trial"] == second
    assert json.loads((run_dir / "summary.json").read_text())["best_trial"] == second
    console = Console(width=300, record=True)
    console.print(leaderboard(open_study(run_dir), "accuracy", console, run_dir=run_dir))
    text = console.export_text()
    assert "3-fold mean ± sd" in text.splitlines()[2]
    rows = [[cell.strip() for cell in line.split("│")[1:4]] for line in text.splitlines() if line.startswith("│")]
    assert rows[0] == ["1", f"{second} *", f"{complete[1].value:.4f}"]

    # Same command again: the folds and every score are recorded, so nothing is trained.
    study = open_study(run_dir)
    folds = study.user_attrs[FOLDS_ATTR]
    assert Counter(folds["assignment"]) == Counter({0: 16, 1: 16, 2: 16})
    calls.clear()
    TransferSearch(**search).run()
    assert calls == []
    # A fold lost to a crash is the only one trained again, on the recorded folds.
    record = study.user_attrs[SCORES_ATTR]
    del record["scores"][str(second)]["1"]
    study.set_user_attr(SCORES_ATTR, record)
    summary = TransferSearch(**search).run()
    assert calls == [(second, 1)]
    assert open_study(run_dir).user_attrs[FOLDS_ATTR] == folds and summary["best_trial"] == second


def test_a_real_cross_check_reports_every_finalists_folds_and_keeps_the_best_mean(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    summary = TransferSearch(dataset=DATASET, space=str(space), trials=3, run_dir=tmp_path / "run", quiet=True,
                             cross_check=2, folds=2).run()
    finalists = summary["cross_check"]["finalists"]
    assert len(finalists) == 2 and all(len(entry["scores"]) == 2 for entry in finalists)
    assert all(0.0 <= score <= 1.0 for entry in finalists for score in entry["scores"])
    best_mean = max(entry["mean"] for entry in finalists)
    kept = next(entry for entry in finalists if entry["trial"] == summary["best_trial"])
    assert kept["mean"] == best_mean and summary["refit"]["trial"] == kept["trial"]
    assert Path(tmp_path / "run" / "best").exists()
