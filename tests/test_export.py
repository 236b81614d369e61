"""Exported models (ONNX through onnxruntime, TorchScript) predict exactly what `predict` does."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image, ImageOps

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main
from automl_transfer.data.datasets import load_dataset

SPACE = "source: [timm:test_resnet@none]\nlr: 0.01\nhead: mlp\nepochs: 2\nbatch_size: 8\nimage_size: 20\n"
#: PIL's resampling filters by the names the preprocessing records.
RESAMPLING = {name: getattr(Image.Resampling, name.upper()) for name in ("nearest", "bilinear", "bicubic", "lanczos")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A one-trial run and a folder of sample images of other sizes and modes than the training images."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "space.yaml").write_text(SPACE)
    dataset = "digits:classes=0-2,per_class=8,size=16"
    TransferSearch(dataset=dataset, space=str(folder / "space.yaml"), trials=1, run_dir=folder / "run", quiet=True).run()
    samples = folder / "samples"
    samples.mkdir()
    for number, (image, _) in enumerate(load_dataset(dataset).test[::60][:6]):
        size = (31 + 7 * number, 24 + 3 * number)  # wide and tall, never the training size
        image = image.resize(size, Image.Resampling.BILINEAR)
        (image.convert("L") if number % 2 else image.convert("RGB")).save(samples / f"{number}.png")
    return folder / "run", samples


def preprocess(path: Path, recorded: dict) -> np.ndarray:
    """Prepare one image by the steps the export's JSON lists, with PIL and numpy only."""
    size, interpolation = recorded["image_size"], RESAMPLING[recorded["interpolation"]]
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(resized, interpolation)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return (np.asarray(image, dtype=np.float32) / 255).transpose(2, 0, 1)


def predictions_of(capsys, run_dir: Path, samples: Path) -> dict[str, tuple[str, float]]:
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(samples), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {Path(line["path"]).name: (line["label"], line["score"]) for line in lines}


def exported_predictions(logits: np.ndarray, names: list[str], class_names: list[str]) -> dict[str, tuple[str, float]]:
    probabilities = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(dim=1)
    scores, indices = probabilities.max(dim=1)
    return {name: (class_names[index], score) for name, index, score in zip(names, indices.tolist(), scores.tolist())}


@pytest.mark.slow
@pytest.mark.parametrize("format_name", ["onnx", "torchscript"])
def test_exported_model_predicts_what_predict_does(trained: tuple[Path, Path], format_name: str, capsys) -> None:
    run_dir, samples = trained
    assert main(["export", str(run_dir), "--format", format_name]) == 0
    model_file = run_dir / "export" / ("model.onnx" if format_name == "onnx" else "model.pt")
    recorded = json.loads(model_file.with_name(model_file.name + ".json").read_text())
    assert recorded["format"] == format_name and recorded["file"] == model_file.name
    assert recorded["class_names"] == ["0", "1", "2"] and recorded["preprocessing"]["image_size"] == 20
    names = sorted(path.name for path in samples.iterdir())
    batch = np.stack([preprocess(samples / name, recorded["preprocessing"]) for name in names])
    if format_name == "onnx":
        session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        (logits,) = session.run([recorded["output"]["name"]], {recorded["input"]["name"]: batch})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch deprecates torch.jit.load
            scripted = torch.jit.load(str(model_file))
        with torch.no_grad():
            logits = scripted(torch.from_numpy(batch)).numpy()
    exported = exported_predictions(logits, names, recorded["class_names"])
    expected = predictions_of(capsys, run_dir, samples)
    assert set(exported) == set(expected) and len(expected) == 6
    for name, (label, score) in expected.items():
        assert exported[name][0] == label, name
        assert exported[name][1] == pytest.approx(score, abs=1e-5), name


def test_export_of_a_folder_without_a_search_says_what_to_give(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path} is not a run directory holding best/; give the run directory, or --output PATH"
    )
