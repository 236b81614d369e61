"""End-to-end searches: real tiny timm models fine-tuned on real digits, through the API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image
from torch import nn

from automl_transfer import TransferSearch, load_model
from automl_transfer.commands.cli import main
from automl_transfer.data.datasets import load_dataset
from automl_transfer.data.prepare import prepare_data
from automl_transfer.plugin import hookimpl
from automl_transfer.storage.run_dir import JOURNAL_NAME
from automl_transfer.training.evaluation import evaluate

DATASET = "digits:classes=0-2,per_class=16,size=16"
SPACE = """
source: [timm:test_resnet@none]
freeze_depth: {low: 0.0, high: 0.5}
lr: {low: 1.0e-3, high: 1.0e-2, log: true}
head: %(head)s
epochs: %(epochs)d
batch_size: 16
image_size: 16
"""
CLI = [sys.executable, "-m", "automl_transfer"]


def write_space(folder: Path, head: str = "[linear, mlp]", epochs: int = 2, **extra: str) -> Path:
    path = folder / "space.yaml"
    path.write_text(SPACE % {"head": head, "epochs": epochs} + "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return path


def load_study(run_dir: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL_NAME)))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One three-trial search shared by the tests that only read its results (best/ as the trial saved it)."""
    folder = tmp_path_factory.mktemp("search")
    run_dir = folder / "run"
    TransferSearch(
        dataset=DATASET, space=str(write_space(folder)), trials=3, run_dir=run_dir, quiet=True, refit=False
    ).run()
    return run_dir


def test_search_writes_summary_and_a_best_model_matching_the_study(finished_run: Path) -> None:
    summary = json.loads((finished_run / "summary.json").read_text())
    assert set(summary) == {
        "metric", "best_value", "best_params", "best_trial", "n_complete", "n_pruned", "n_failed", "refit", "cross_check", "test"
    }  # "test": the digits dataset has a test split, so the final best model is scored on it
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == 3
    study = load_study(finished_run)
    assert summary["best_value"] == study.best_value
    best = study.trials[summary["best_trial"]]
    assert best.value == study.best_value
    tied = [t for t in study.trials if t.value == study.best_value]  # equal accuracy: the lowest loss is best
    assert best.user_attrs["metrics"]["val_loss"] == min(t.user_attrs["metrics"]["val_loss"] for t in tied)
    info = json.loads((finished_run / "best" / "model.json").read_text())
    assert info["trial"] == best.number and info["value"] == study.best_value
    assert info["class_names"] == ["0", "1", "2"]
    assert best.params["lr"] == pytest.approx(info["params"]["lr"])
    assert "source" in best.params
    assert "freeze_depth" not in best.params and info["params"]["freeze_depth"] == 0.0  # random weights


def test_reloaded_best_model_reproduces_its_recorded_metric(finished_run: Path) -> None:
    loaded = load_model(finished_run, device="cpu")
    info = loaded.info
    data = prepare_data(load_dataset(DATASET), info["preprocessing"]["image_size"], seed=0)
    metrics = evaluate(loaded.model, data.val, torch.device("cpu"), batch_size=7)
    assert metrics["accuracy"] == pytest.approx(info["value"], abs=1e-9)
    assert metrics["val_loss"] == pytest.approx(info["metrics"]["val_loss"], rel=1e-5)


def test_predict_accepts_paths_pil_images_and_tensors(finished_run: Path, tmp_path: Path) -> None:
    loaded = load_model(finished_run, device="cpu")
    image = Image.new("L", (16, 16), color=200).convert("RGB")
    image.save(tmp_path / "white.png")
    from_path, from_pil, from_tensor = (
        loaded.predict(tmp_path / "white.png")[0],
        loaded.predict(image)[0],
        loaded.predict(torch.full((3, 16, 16), 200, dtype=torch.uint8))[0],
    )
    assert from_path.label == from_pil.label == from_tensor.label
    assert from_path.score == pytest.approx(from_pil.score) == pytest.approx(from_tensor.score)
    assert from_path.label in {"0", "1", "2"} and 0.0 < from_path.score <= 1.0


def test_rerunning_a_finished_search_adds_no_trials_and_a_larger_count_resumes(finished_run: Path) -> None:
    space = finished_run.parent / "space.yaml"
    TransferSearch(dataset=DATASET, space=str(space), trials=3, run_dir=finished_run, quiet=True).run()
    assert len(load_study(finished_run).trials) == 3
    summary = TransferSearch(dataset=DATASET, space=str(space), trials=4, run_dir=finished_run, quiet=True).run()
    trials = load_study(finished_run).trials
    assert [trial.number for trial in trials] == [0, 1, 2, 3]
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == 4


def test_same_seed_gives_the_same_first_trial_and_metric(tmp_path: Path) -> None:
    space = write_space(tmp_path, head="linear", epochs=1)
    values = []
    for name in ("a", "b"):
        TransferSearch(dataset=DATASET, space=str(space), trials=1, run_dir=tmp_path / name, seed=3, quiet=True).run()
        trial = load_study(tmp_path / name).trials[0]
        values.append((trial.params, trial.value))
    assert values[0] == values[1]


def test_resuming_with_another_seed_samples_anew_but_scores_on_the_same_validation_split(tmp_path: Path) -> None:
    space = write_space(tmp_path, head="linear", epochs=1)
    run_dir = tmp_path / "run"
    TransferSearch(dataset=DATASET, space=str(space), trials=1, run_dir=run_dir, seed=0, quiet=True).run()
    cached = sorted(path.name for path in (run_dir / "cache").iterdir())
    first = load_study(run_dir).trials[0]

    resumed = TransferSearch(dataset=DATASET, space=str(space), trials=2, run_dir=run_dir, seed=7, quiet=True)
    study = resumed.open()
    resumed.work(study)
    dataset = load_dataset(DATASET)
    (used,) = resumed._prepared.values()
    assert torch.equal(used.val.images, prepare_data(dataset, 16, seed=0).val.images)  # the study's split
    assert not torch.equal(used.val.images, prepare_data(dataset, 16, seed=7).val.images)
    assert sorted(path.name for path in (run_dir / "cache").iterdir()) == cached  # nothing decoded again
    trials = load_study(run_dir).trials
    assert (trials[0].params, trials[0].value) == (first.params, first.value)
    assert trials[1].user_attrs["train_seed"] == 7 + 1  # sampling and training follow the new seed


class ExplodingHead:
    """A head plugin whose module raises on its first forward pass."""

    @hookimpl
    def register_heads(self, register):
        register("exploding", lambda in_features, num_classes: Exploding())


class Exploding(nn.Module):
    def forward(self, features):
        raise RuntimeError("head exploded on purpose")


def test_nan_and_exception_trials_are_recorded_and_the_search_completes(tmp_path: Path, register_plugin) -> None:
    register_plugin(ExplodingHead(), "exploding-head")
    space = write_space(tmp_path, head="[linear, exploding]", epochs=1, start="[]")
    search = TransferSearch(dataset=DATASET, space=str(space), trials=3, run_dir=tmp_path / "run", quiet=True)
    study = search.open()
    study.enqueue_trial({"lr": 1e-2, "freeze_depth": 0.0, "head": "exploding", "source": "timm:test_resnet@none"})
    study.enqueue_trial({"lr": 1e12, "freeze_depth": 0.0, "head": "linear", "source": "timm:test_resnet@none"})
    study.enqueue_trial({"lr": 1e-2, "freeze_depth": 0.0, "head": "linear", "source": "timm:test_resnet@none"})
    summary = search.run()
    trials = load_study(tmp_path / "run").trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "head exploded on purpose" in trials[0].user_attrs["fail_reason"]
    assert "Traceback" in trials[0].user_attrs["traceback"]
    assert trials[1].user_attrs["fail_reason"] == "non-finite loss"
    assert summary["n_failed"] == 2 and summary["best_trial"] == 2
    assert json.loads((tmp_path / "run" / "best" / "model.json").read_text())["trial"] == 2


def test_median_pruner_prunes_a_hopeless_trial(tmp_path: Path) -> None:
    space = write_space(tmp_path, head="linear", epochs=5, start="[]", min_steps=20)
    space.write_text(space.read_text().replace("low: 1.0e-3", "low: 1.0e-7"))
    search = TransferSearch(
        dataset=DATASET, space=str(space), trials=6, run_dir=tmp_path / "run", pruner="median", metric="loss", quiet=True
    )
    study = search.open()
    for lr in (1e-2,) * 5 + (1e-7,):  # five start-up trials; the last cannot learn anything in 5 epochs
        study.enqueue_trial({"lr": lr, "source": "timm:test_resnet@none"})
    summary = search.run()
    trials = load_study(tmp_path / "run").trials
    assert trials[5].state == TrialState.PRUNED, [t.intermediate_values for t in trials]
    assert len(trials[5].intermediate_values) == 3  # judged once three epochs are in, not before
    assert summary["n_pruned"] == 1


def test_a_saved_best_model_is_a_source_for_a_new_search(finished_run: Path, tmp_path: Path) -> None:
    weights = finished_run / "best" / "model.safetensors"
    architecture = json.loads((finished_run / "best" / "model.json").read_text())["architecture"]
    space = tmp_path / "chained.yaml"
    space.write_text(f"source: ['timm:{architecture}@{weights}']\nhead: linear\nepochs: 1\nbatch_size: 16\nimage_size: 16\n")
    summary = TransferSearch(dataset=DATASET, space=str(space), trials=1, run_dir=tmp_path / "run", quiet=True).run()
    assert summary["n_complete"] == 1


@pytest.mark.slow
def test_cli_search_predict_and_report(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(f"dataset: '{DATASET}'\nspace: {space}\ntrials: 5\nrun-dir: {tmp_path / 'run'}\n")
    search = subprocess.run([*CLI, "search", "--config", str(job), "--trials", "2"], capture_output=True, text=True)
    assert search.returncode == 0, search.stderr
    assert "Leaderboard (accuracy)" in search.stdout and "trial 1: accuracy=" in search.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_complete"] == 2

    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), color=30).save(image)
    predict = subprocess.run([*CLI, "predict", str(tmp_path / "run"), str(image), "--json"], capture_output=True, text=True)
    assert predict.returncode == 0, predict.stderr
    (line,) = predict.stdout.strip().splitlines()
    prediction = json.loads(line)
    assert set(prediction) == {"path", "label", "score"} and prediction["label"] in {"0", "1", "2"}

    report = subprocess.run([*CLI, "report", str(tmp_path / "run")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "run" / "report" / "history.html").stat().st_size > 0
    assert "Parameter importances: none yet; they need 10 complete trials" in report.stdout  # 2 trials say nothing


def test_cli_rejects_zero_trials_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "search", "--dataset", DATASET, "--space", "small", "--trials", "0", "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --trials must be a positive number, not 0"]
    assert not (tmp_path / "run").exists()


def test_file_and_class_names_that_are_not_utf8_are_searched_and_predicted_by_their_bytes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in (b"plain", b"caf\xe9"):  # Latin-1 'café': not valid UTF-8
        folder = data / os.fsdecode(name)
        folder.mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (16, 16), (40 * index, 200 if name == b"plain" else 20, 90)).save(folder / f"{index}.png")
    odd_file = data / "plain" / os.fsdecode(b"\xff\xfe.png")
    Image.new("RGB", (16, 16), (10, 200, 90)).save(odd_file)
    space = write_space(tmp_path, head="linear", epochs=1)
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as on an en_US.UTF-8 machine
    search = subprocess.run([*CLI, "search", "--dataset", f"imagefolder:{data}", "--space", str(space), "--trials", "1",
                             "--run-dir", str(tmp_path / "run"), "--quiet"], capture_output=True, env=environment,
                            timeout=240)
    assert search.returncode == 0, search.stderr.decode(errors="replace")
    predict = subprocess.run([*CLI, "predict", str(tmp_path / "run"), str(data)], capture_output=True,
                             env=environment, timeout=120)
    assert predict.returncode == 0, predict.stderr.decode(errors="replace")
    lines = predict.stdout.splitlines()
    assert len(lines) == 13 and os.fsencode(odd_file) + b"\t" in predict.stdout
    assert {line.split(b"\t")[1] for line in lines} <= {b"plain", b"caf\xe9"}


def test_a_search_whose_every_trial_fails_says_so_and_exits_2(tmp_path: Path, register_plugin, capsys) -> None:
    register_plugin(ExplodingHead(), "exploding-head")
    space = write_space(tmp_path, head="exploding", epochs=1)
    arguments = ["search", "--dataset", DATASET, "--space", str(space), "--trials", "2", "--run-dir",
                 str(tmp_path / "run"), "--quiet"]
    assert main(arguments) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line == (f"error: every trial failed (2x RuntimeError: head exploded on purpose), so there is no best model "
                    f"in {tmp_path / 'run'}; fix the cause, then start over with --force-new "
                    f"(`automl-transfer report {tmp_path / 'run'}` lists each trial's reason)")
    assert "best model:" not in out and not (tmp_path / "run" / "best").exists()


def make_images(folder: Path) -> Path:
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (16, 16), (40 * index, 200 if name == "a" else 20, 90)).save(folder / name / f"{index}.png")
    return folder


def test_a_touched_file_resumes_a_changed_one_is_refused_naming_what_force_new_deletes(tmp_path: Path) -> None:
    data = make_images(tmp_path / "data")
    space = write_space(tmp_path, head="linear", epochs=1)
    run_dir = tmp_path / "run"

    def command(trials: int, *extra: str) -> list[str]:
        return [*CLI, "search", "--dataset", f"imagefolder:{data}", "--space", str(space), "--trials", str(trials),
                "--run-dir", str(run_dir), "--quiet", *extra]

    assert subprocess.run(command(1), capture_output=True, timeout=240).returncode == 0
    first = load_study(run_dir).trials[0]
    os.utime(data / "a" / "0.png", (1e9, 1e9))  # touched: same bytes, another time
    resumed = subprocess.run(command(2), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_study(run_dir).trials
    assert len(trials) == 2 and (trials[0].params, trials[0].value) == (first.params, first.value)

    Image.new("RGB", (16, 16), (1, 2, 3)).save(data / "a" / "0.png")  # now really changed
    refused = subprocess.run(command(3), capture_output=True, text=True, timeout=240)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("with a different dataset_fingerprint; pass --force-new to delete it "
                                           "(2 trial(s) and its best model) and start over, or choose another --run-dir")
    assert len(load_study(run_dir).trials) == 2
    replaced = subprocess.run(command(1, "--force-new"), capture_output=True, text=True, timeout=240)
    assert replaced.returncode == 0, replaced.stderr
    assert len(load_study(run_dir).trials) == 1  # what the message said would go, went
