"""The search-quality mechanisms, end to end on real tiny trials: start points, pruning, refit."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from automl_transfer import TransferSearch, load_model
from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import prepare_data
from automl_transfer.search.pruning import AfterWarmup

DATASET = "digits:classes=0-2,per_class=20,size=16"
SPACE = """
source: [timm:test_resnet@none, timm:test_efficientnet@none]
lr: {low: 1.0e-3, high: 3.0e-2, log: true}
head: linear
epochs: 3
batch_size: 16
image_size: 16
augment: none
start: [{lr: 1.0e-2}, {lr: 2.0e-3}]
"""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_start_points_run_first_for_every_source_then_the_sampler_takes_over(tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    TransferSearch(dataset=DATASET, space=str(space), trials=5, run_dir=tmp_path / "run", quiet=True, refit=False).run()
    study = optuna.load_study(
        study_name="digits-classes-0-2-per_class-20-size-16-space",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "run" / "study.journal"))),
    )
    first = [(trial.user_attrs.get("start_point"), trial.params["source"], trial.params["lr"]) for trial in study.trials[:4]]
    assert first == [
        (0, "timm:test_resnet@none", 1.0e-2),
        (1, "timm:test_efficientnet@none", 1.0e-2),
        (2, "timm:test_resnet@none", 2.0e-3),
        (3, "timm:test_efficientnet@none", 2.0e-3),
    ]
    assert "start_point" not in study.trials[4].user_attrs
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)


def test_no_trial_is_judged_before_its_warm_up_is_over():
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    pruner = AfterWarmup(AlwaysPrune())
    study = optuna.create_study()

    def trial_at(step: int, warmup: float):
        return create_trial(
            state=TrialState.RUNNING,
            intermediate_values={epoch: 0.5 for epoch in range(1, step + 1)},
            user_attrs={"params": {"warmup_epochs": warmup}},
        )

    assert not pruner.prune(study, trial_at(1, 1.0))
    assert pruner.prune(study, trial_at(2, 1.0))
    assert not pruner.prune(study, trial_at(3, 2.5))  # a fractional warm-up ends within epoch 3
    assert pruner.prune(study, trial_at(4, 2.5))
    assert not pruner.prune(study, create_trial(state=TrialState.RUNNING, user_attrs={"params": {}}))


def test_refit_trains_the_winner_on_train_and_validation_and_it_predicts(tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run_dir = tmp_path / "run"
    summary = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True).run()

    info = json.loads((run_dir / "best" / "model.json").read_text())
    data = prepare_data(load_dataset(DATASET), 16, seed=0)
    assert info["refit"] == summary["refit"]
    assert info["refit"]["train_images"] == len(data.train) + len(data.val) == 60
    assert info["refit"]["trial"] == summary["best_trial"] == info["trial"]
    assert info["refit"]["epochs"] == info["best_epoch"]
    assert info["value"] == summary["best_value"]  # the validation score that selected it
    loaded = load_model(run_dir, device="cpu")
    predictions = loaded.predict([image for image, _ in load_dataset(DATASET).test[:20]])
    assert len(predictions) == 20 and {prediction.label for prediction in predictions} <= {"0", "1", "2"}

    # Running the same command again finds the refit done: nothing is trained or rewritten.
    best_dir = (run_dir / "best").resolve()
    again = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, quiet=True).run()
    assert again["refit"] == summary["refit"] and (run_dir / "best").resolve() == best_dir


def test_no_refit_keeps_the_selected_trials_model(tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run_dir = tmp_path / "run"
    summary = TransferSearch(dataset=DATASET, space=str(space), trials=1, run_dir=run_dir, quiet=True, refit=False).run()
    assert summary["refit"] is None and json.loads((run_dir / "best" / "model.json").read_text())["refit"] is None
