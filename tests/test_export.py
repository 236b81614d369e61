"""Exported models (ONNX through onnxruntime, TorchScript) predict exactly what `predict` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image, ImageOps
from search_processes import CLI

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


#: Mounts a tmpfs at $MOUNT, exports into it, fills it, exports again over the file and beside it.
FULL_DISK_EXPORT = r"""
set -e
mount -t tmpfs -o size=4m tmpfs "$MOUNT"
"$@" --output "$MOUNT/model.pt" > /dev/null
cp "$MOUNT/model.pt" "$OUT/first.pt"
"$PYTHON" -c '
import os, sys
descriptor = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
for size in (65536, 1):
    try:
        while True:
            os.write(descriptor, b"x" * size)
    except OSError:
        pass
' "$MOUNT/.filler"
set +e
"$@" --output "$MOUNT/model.pt" > "$OUT/again.out" 2> "$OUT/again.err"; echo $? > "$OUT/again.rc"
"$@" --output "$MOUNT/new.pt" > "$OUT/new.out" 2> "$OUT/new.err"; echo $? > "$OUT/new.rc"
set -e
ls -a "$MOUNT" > "$OUT/listing"
cp "$MOUNT/model.pt" "$OUT/after.pt"
"""


def unshare_works(script: str) -> bool:
    """Whether this machine lets a process mount in its own user and mount namespace (``unshare -rm``)."""
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True).returncode == 0


@pytest.mark.skipif(not unshare_works("mount -t tmpfs tmpfs /mnt"), reason="needs `unshare -rm` to mount a small tmpfs")
def test_export_onto_a_full_disk_is_one_line_and_leaves_the_previous_export_whole(trained, tmp_path: Path) -> None:
    mount, out = tmp_path / "mount", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    command = [*CLI, "export", str(trained[0]), "--format", "torchscript"]
    environment = {**os.environ, "MOUNT": str(mount), "OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK_EXPORT, "sh", *command], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("again", "new"):  # over the previous export, and a new file (torch's writer aborted: exit 134)
        assert (out / f"{name}.rc").read_text().strip() == "2", (out / f"{name}.err").read_text()
        (line,) = (out / f"{name}.err").read_text().splitlines()
        written = mount / ("model.pt" if name == "again" else "new.pt")
        assert line == (f"error: cannot write {written}: No space left on device; free some space or choose another "
                        "--output (a file already there is left as it was)")
        assert "trial" not in line  # the wording of search's full disk does not fit export
    assert (out / "after.pt").read_bytes() == (out / "first.pt").read_bytes()
    assert sorted((out / "listing").read_text().split()) == [".", "..", ".filler", "model.pt", "model.pt.json"]


def test_export_to_a_device_a_folder_or_a_read_only_place_is_one_error_line(trained, tmp_path: Path) -> None:
    command = [*CLI, "export", str(trained[0]), "--format", "torchscript", "--output"]
    for output, expected in [
        ("/dev/full", "error: --output /dev/full is not a regular file (a device, a pipe or a socket); give the path of a file to write"),
        (str(tmp_path), f"error: --output {tmp_path} is a folder; give the model file's path, such as {tmp_path / 'model.pt'}"),
    ]:
        result = subprocess.run([*command, output], capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr.splitlines()) == (2, [expected]), result.stderr
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    if not unshare_works(script.replace("$0", str(tmp_path)).replace('"$@"', "true")):
        pytest.skip("needs `unshare -rm` to make a read-only folder")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(tmp_path), *command, str(tmp_path / "m.pt")],
                            capture_output=True, text=True, timeout=120)
    (line,) = result.stderr.splitlines()
    assert result.returncode == 2 and line.startswith("error: cannot write ")
    assert line.endswith("Read-only file system; choose another --output (a file already there is left as it was)")
    assert list(tmp_path.iterdir()) == []
