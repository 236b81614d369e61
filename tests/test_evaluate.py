"""Scoring the best model on labelled images: `evaluate` and `search --test`, checked against `predict`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from search_processes import CLI
from sklearn.metrics import f1_score, precision_score, recall_score

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main
from automl_transfer.data.datasets import load_dataset

SPACE = "source: [timm:test_resnet@none]\nlr: 0.01\nhead: linear\nepochs: 2\nbatch_size: 8\nimage_size: 16\n"
CLASSES = ["0", "1", "2"]


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_image_folder(folder: Path, test_per_class: int = 6) -> Path:
    """Save digits 0-2 as ``train/<class>/*.png`` (8 each) and ``test/<class>/*.png``."""
    digits = load_dataset("digits:classes=0-2,per_class=8,size=16")
    taken = {name: 0 for name in CLASSES}
    for split, items in (("train", digits.train), ("test", digits.test)):
        for number, (image, label) in enumerate(items):
            name = CLASSES[label]
            if split == "test" and taken[name] == test_per_class:
                continue
            taken[name] += split == "test"
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            image.save(folder / split / name / f"{number:04d}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A one-trial search on an image folder with a test split, scored on that split by ``test``."""
    folder = tmp_path_factory.mktemp("evaluate")
    data = write_image_folder(folder / "data")
    (folder / "space.yaml").write_text(SPACE)
    TransferSearch(
        dataset=f"imagefolder:{data}", space=str(folder / "space.yaml"), trials=1, run_dir=folder / "run",
        test=f"imagefolder:{data / 'test'}", quiet=True,
    ).run()
    return folder / "run", data


def scores_from_predict(capsys: pytest.CaptureFixture, run_dir: Path, images: Path) -> dict:
    """Compute the scores from `predict --json`, the true class being each image's folder name."""
    code, out, err = cli(capsys, "predict", str(run_dir), str(images), "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    true = [Path(line["path"]).parent.name for line in lines]
    predicted = [line["label"] for line in lines]
    options = {"labels": CLASSES, "average": None, "zero_division": 0}
    return {
        "n_images": len(lines),
        "accuracy": sum(t == p for t, p in zip(true, predicted)) / len(lines),
        "macro_f1": f1_score(true, predicted, average="macro"),
        "precision": list(precision_score(true, predicted, **options)),
        "recall": list(recall_score(true, predicted, **options)),
        "confusion": [[sum(t == a and p == b for t, p in zip(true, predicted)) for b in CLASSES] for a in CLASSES],
    }


@pytest.mark.slow
def test_evaluate_numbers_equal_those_computed_from_predict(run: tuple[Path, Path], capsys) -> None:
    run_dir, data = run
    code, out, err = cli(capsys, "evaluate", str(run_dir), f"imagefolder:{data}", "--json")
    assert code == 0, err
    evaluation = json.loads(out)
    expected = scores_from_predict(capsys, run_dir, data / "test")
    assert evaluation["split"] == "test" and evaluation["dataset"] == f"imagefolder:{data}"
    assert evaluation["n_images"] == expected["n_images"] == 18
    assert evaluation["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert evaluation["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert evaluation["confusion_matrix"] == expected["confusion"]
    per_class = evaluation["per_class"]
    assert list(per_class) == CLASSES and [per_class[name]["images"] for name in CLASSES] == [6, 6, 6]
    assert [per_class[name]["recall"] for name in CLASSES] == pytest.approx(expected["recall"], abs=1e-12)
    predicted = [sum(column) for column in zip(*expected["confusion"])]
    precision = [per_class[name]["precision"] for name in CLASSES]
    assert [value for value, count in zip(precision, predicted) if count] == pytest.approx(
        [value for value, count in zip(expected["precision"], predicted) if count], abs=1e-12
    )
    assert all(value is None for value, count in zip(precision, predicted) if not count)


@pytest.mark.slow
def test_search_test_lands_in_summary_and_matches_evaluate(run: tuple[Path, Path], capsys) -> None:
    run_dir, data = run
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluated = json.loads(cli(capsys, "evaluate", str(run_dir), f"imagefolder:{data / 'test'}", "--json")[1])
    assert summary["test"] == evaluated
    assert summary["test"]["split"] == "all" and summary["test"]["n_images"] == 18
    assert summary["test"]["trial"] == summary["best_trial"]


@pytest.mark.slow
def test_evaluate_prints_which_images_it_scored_and_the_confusion_matrix(run: tuple[Path, Path], capsys) -> None:
    run_dir, data = run
    code, out, err = cli(capsys, "evaluate", str(run_dir), f"imagefolder:{data / 'train'}")
    assert code == 0, err
    assert f"on all 24 images of imagefolder:{data / 'train'} (it has no test split)" in out
    assert "Per class" in out and "Confusion matrix" in out


@pytest.mark.slow
def test_a_dataset_with_its_own_test_split_is_scored_without_the_flag(tmp_path: Path, capsys) -> None:
    (tmp_path / "space.yaml").write_text(SPACE.replace("epochs: 2", "epochs: 1"))
    dataset = "digits:classes=0-1,per_class=6,size=16"
    code, out, err = cli(
        capsys, "search", "--dataset", dataset, "--space", str(tmp_path / "space.yaml"), "--trials", "1",
        "--run-dir", str(tmp_path / "run"),
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["split"] == "test" and summary["test"]["dataset"] == dataset
    assert f"on held-out images: accuracy {summary['test']['accuracy']:.4f}" in out
    assert summary["test"]["n_images"] == len(load_dataset(dataset).test)


def test_classes_the_model_does_not_know_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    data = write_image_folder(tmp_path / "data", test_per_class=2)
    (data / "test" / "7").mkdir()
    (data / "test" / "0" / "0000.png").rename(data / "test" / "7" / "0000.png")
    code, out, err = cli(
        capsys, "search", "--dataset", f"imagefolder:{data / 'train'}", "--space", "small", "--trials", "1",
        "--run-dir", str(tmp_path / "run"), "--test", f"imagefolder:{data / 'test'}",
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: imagefolder:{data / 'test'} has class(es) ['7'] that the search dataset "
        f"imagefolder:{data / 'train'} does not know "
        "(its classes: ['0', '1', '2']); score it on images of those classes only"
    ]
    assert not (tmp_path / "run").exists()


def test_evaluate_scores_a_folder_of_one_class(run: tuple[Path, Path]) -> None:
    run_dir, data = run
    one = data.parent / "only-ones"
    shutil.copytree(data / "test" / "1", one / "1")
    result = subprocess.run([*CLI, "evaluate", str(run_dir), f"imagefolder:{one}", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["n_images"] == 6 and scored["split"] == "all"
    assert scored["per_class"]["1"]["images"] == 6 and scored["per_class"]["0"]["recall"] is None
    assert sum(map(sum, scored["confusion_matrix"])) == 6


def test_control_characters_in_class_names_are_escaped_on_the_terminal(run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, data = run
    names = ["\x1b]0;pwned\x07", "tab\there", "new\nline"]  # an OSC title, a tab, a newline
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    info_path = (copy / "best").resolve() / "model.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "class_names": names}))
    for name, folder in zip(names, CLASSES):
        shutil.copytree(data / "test" / folder, tmp_path / "data" / name)
    result = subprocess.run([*CLI, "evaluate", str(copy), f"imagefolder:{tmp_path / 'data'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "tab\there" not in result.stdout
    for shown in ("\\x1b]0;pwned\\x07", "tab\\there", "new\\nline"):
        assert shown in result.stdout
