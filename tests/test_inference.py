"""Loading a best model back through the plugins and classifying files, PIL images and tensors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from search_processes import CLI

from automl_transfer.commands import COMMAND_MODULES, cli
from automl_transfer.data.images import read_image, resize_to_tensor
from automl_transfer.errors import DatasetError, RunDirError
from automl_transfer.inference.predictor import LoadedModel, Prediction, load_model
from automl_transfer.model.network import TransferModel
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import build_backbone
from automl_transfer.registry import get_component
from automl_transfer.storage import model_schema
from automl_transfer.storage.checkpoint import BestModelInfo, save_best

IMAGE_SIZE = 40
CLASS_NAMES = ["cat", "dog", "fish"]
HEAD_PARAMS = {"hidden": 16, "dropout": 0.25}
INTERPOLATION = "bicubic"


def build_model(head_params: dict = HEAD_PARAMS) -> TransferModel:
    """The network a search trial would train: backbone and head both from their plugins."""
    torch.manual_seed(0)
    backbone = build_backbone(SourceSpec("timm", "test_resnet", "none"))
    head = get_component("head", "mlp").build(backbone.num_features, len(CLASS_NAMES), **head_params)
    model = TransferModel(backbone.module, head, [0.4, 0.45, 0.5], [0.2, 0.25, 0.3])
    with torch.no_grad():  # spread the logits so that any preprocessing difference shows
        head[-1].weight.mul_(20)
    model.train()(torch.rand(8, 3, IMAGE_SIZE, IMAGE_SIZE))  # BatchNorm statistics away from 0/1
    return model.eval()


def best_info() -> BestModelInfo:
    return BestModelInfo(
        source="timm:test_resnet@none",
        backbone_plugin="timm",
        architecture="test_resnet",
        head="mlp",
        head_params=HEAD_PARAMS,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        preprocessing={"image_size": IMAGE_SIZE, "interpolation": INTERPOLATION,
                       "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]},
        params={"source": "timm:test_resnet@none", "head": "mlp", "lr": 0.001},
        metric="accuracy",
        value=0.9,
        trial=3,
        dataset="synthetic",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory holding a best model, and the in-memory model that was saved."""
    run_dir = tmp_path_factory.mktemp("run")
    model = build_model()
    save_best(run_dir, model, best_info())
    return run_dir, model


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Images of assorted sizes and modes, in a nested folder, with files that are not images."""
    folder = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    (folder / "sub").mkdir()
    (folder / ".hidden").mkdir()
    sizes = {"a.png": (64, 48), "b.jpg": (50, 80), "sub/c.png": (40, 40), "sub/d.bmp": (33, 71)}
    for name, (width, height) in sizes.items():
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / name)
    Image.new("L", (45, 45), 128).save(folder / "sub" / "gray.png")
    Image.new("RGB", (45, 45)).save(folder / ".hidden" / "skipped.png")
    Image.new("RGB", (45, 45)).save(folder / ".skipped.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def expected_probabilities(model: TransferModel, images: list[torch.Tensor]) -> torch.Tensor:
    """Softmax of the model's own forward pass on images preprocessed as training does."""
    with torch.no_grad():
        return model(torch.stack(images).float() / 255).softmax(dim=1)


def training_pixels(path_or_image) -> torch.Tensor:
    return resize_to_tensor(read_image(path_or_image), IMAGE_SIZE, INTERPOLATION)


def assert_predictions_match(predictions: list[Prediction], probabilities: torch.Tensor) -> None:
    assert len(predictions) == len(probabilities)
    for prediction, row in zip(predictions, probabilities):
        assert prediction.index == int(row.argmax())
        assert prediction.label == CLASS_NAMES[prediction.index]
        assert prediction.score == pytest.approx(float(row.max()), rel=1e-5, abs=1e-6)
        assert 0.0 <= prediction.score <= 1.0


def test_loaded_model_is_the_saved_one(trained):
    run_dir, model = trained
    loaded = load_model(run_dir, device="cpu")

    assert isinstance(loaded, LoadedModel)
    assert loaded.class_names == CLASS_NAMES and loaded.info["trial"] == 3
    assert loaded.device == torch.device("cpu") and not loaded.model.training
    assert (loaded.image_size, loaded.interpolation) == (IMAGE_SIZE, INTERPOLATION)
    saved = model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert torch.equal(loaded.model.mean, model.mean) and torch.equal(loaded.model.std, model.std)
    for path in (run_dir / "best", run_dir / "best" / "model.json", run_dir / "best" / "model.safetensors"):
        assert load_model(path, device="cpu").info == loaded.info


def test_predicting_files_and_folders_matches_the_forward_pass(trained, image_dir):
    run_dir, model = trained
    loaded = load_model(run_dir, device="cpu")

    predictions = loaded.predict(image_dir, batch_size=2)

    expected_files = [image_dir / name for name in ("a.png", "b.jpg", "sub/c.png", "sub/d.bmp", "sub/gray.png")]
    assert [prediction.path for prediction in predictions] == [str(path) for path in expected_files]
    probabilities = expected_probabilities(model, [training_pixels(path) for path in expected_files])
    assert_predictions_match(predictions, probabilities)
    assert len({prediction.index for prediction in predictions}) > 1  # the check is not trivially passed
    [one_file] = loaded.predict(str(image_dir / "b.jpg"))
    assert (one_file.path, one_file.index) == (predictions[1].path, predictions[1].index)
    assert one_file.score == pytest.approx(predictions[1].score, rel=1e-5)


def test_predicting_pil_images_and_tensors(trained, image_dir):
    run_dir, model = trained
    loaded = load_model(run_dir, device="cpu")
    files = [image_dir / "a.png", image_dir / "b.jpg", image_dir / "sub" / "d.bmp"]
    pil_images = [Image.open(path) for path in files]
    pixels = [training_pixels(path) for path in files]
    probabilities = expected_probabilities(model, pixels)

    from_pil = loaded.predict(pil_images)
    assert [prediction.path for prediction in from_pil] == [None] * 3
    assert_predictions_match(from_pil, probabilities)
    assert_predictions_match(loaded.predict(pixels), probabilities)  # uint8 (3, S, S)
    assert_predictions_match(loaded.predict(torch.stack(pixels).float() / 255), probabilities)  # float batch
    # A tensor of another size is resized like a PIL image of the same pixels.
    full_size = torch.from_numpy(np.array(read_image(files[0]))).permute(2, 0, 1)
    assert_predictions_match(loaded.predict(full_size), probabilities[:1])
    assert_predictions_match(loaded.predict(full_size.float() / 255), probabilities[:1])


def test_mixed_inputs_keep_their_order_and_batch_size_does_not_matter(trained, image_dir):
    loaded = load_model(trained[0], device="cpu")
    gray = torch.full((1, IMAGE_SIZE, IMAGE_SIZE), 128, dtype=torch.uint8)
    inputs = [image_dir / "a.png", Image.open(image_dir / "b.jpg"), gray, str(image_dir / "sub")]

    in_one_batch = loaded.predict(inputs, batch_size=64)
    one_by_one = loaded.predict(inputs, batch_size=1)

    assert [p.path for p in in_one_batch] == [str(image_dir / "a.png"), None, None,
                                             str(image_dir / "sub" / "c.png"), str(image_dir / "sub" / "d.bmp"),
                                             str(image_dir / "sub" / "gray.png")]
    for batched, single in zip(in_one_batch, one_by_one):
        assert (batched.path, batched.index) == (single.path, single.index)
        assert batched.score == pytest.approx(single.score, rel=1e-5)
    assert in_one_batch[2].index == in_one_batch[5].index  # a gray tensor and a gray file agree
    assert in_one_batch[2].score == pytest.approx(in_one_batch[5].score, rel=1e-5)
    assert loaded.predict([]) == []


def test_bad_inputs_are_refused_before_any_work(trained, image_dir, tmp_path):
    loaded = load_model(trained[0], device="cpu")
    with pytest.raises(DatasetError, match="missing.png does not exist"):
        loaded.predict([image_dir / "a.png", tmp_path / "missing.png"])
    with pytest.raises(DatasetError, match="holds no image files"):
        loaded.predict(tmp_path)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match="corrupt.jpg"):
        loaded.predict(corrupt)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        loaded.predict(torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, 3))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        loaded.predict(torch.zeros(IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(TypeError, match="int"):
        loaded.predict([3])


def test_no_best_model_yet(tmp_path):
    with pytest.raises(RunDirError, match=r"no best model in .* yet: run `automl-transfer search"):
        load_model(tmp_path)
    with pytest.raises(RunDirError, match="does not exist"):
        load_model(tmp_path / "never-searched")


def test_weights_that_do_not_fit_the_recorded_architecture(tmp_path):
    info = best_info()
    info.head_params = {"hidden": 32, "dropout": 0.25}  # the saved head is 16 wide
    save_best(tmp_path, build_model(), info)
    with pytest.raises(RunDirError, match="do not fit a rebuilt timm:test_resnet with head 'mlp'"):
        load_model(tmp_path)


def test_a_best_model_is_a_source_for_a_new_search(trained):
    run_dir, model = trained
    backbone = build_backbone(f"timm:test_resnet@{run_dir / 'best' / 'model.safetensors'}")
    expected = {name.removeprefix("backbone."): tensor for name, tensor in model.state_dict().items()
                if name.startswith("backbone.")}
    state = backbone.module.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in expected.items())


def test_predict_is_a_cli_command():
    assert "predict" in COMMAND_MODULES


@pytest.fixture
def cli_with_predict(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("predict",))
    return cli.main


def test_cli_prints_tab_separated_lines_and_json(trained, image_dir, cli_with_predict, capsys):
    run_dir, model = trained
    files = [image_dir / "a.png", image_dir / "sub" / "c.png"]
    probabilities = expected_probabilities(model, [training_pixels(path) for path in files])

    assert cli_with_predict(["predict", str(run_dir), *map(str, files), "--device", "cpu", "--batch-size", "1"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(path, label) for path, label, _ in lines] == [
        (str(path), CLASS_NAMES[int(row.argmax())]) for path, row in zip(files, probabilities)
    ]
    assert [float(score) for *_, score in lines] == pytest.approx(probabilities.max(dim=1).values.tolist(), abs=1e-4)

    assert cli_with_predict(["predict", str(run_dir), str(image_dir / "sub"), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    for record in records:
        assert set(record) == {"path", "label", "score"}
        assert record["label"] in CLASS_NAMES and isinstance(record["score"], float) and 0 <= record["score"] <= 1


def test_cli_errors_are_one_line_with_exit_code_2(trained, cli_with_predict, capsys, tmp_path):
    assert cli_with_predict(["predict", str(trained[0]), str(tmp_path / "missing.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [f"error: image {tmp_path / 'missing.png'} does not exist"]

    assert cli_with_predict(["predict", str(tmp_path), str(tmp_path)]) == 2
    assert "no best model in" in capsys.readouterr().err


@pytest.fixture(scope="module")
def folder_with_a_bad_image(tmp_path_factory):
    """40 good images and, 25th in path order, a PNG cut in half (a truncated download)."""
    folder = tmp_path_factory.mktemp("many")
    for number in range(40):
        Image.new("RGB", (24, 24), (number * 6, 90, 200 - number * 4)).save(folder / f"{number:03d}.png")
    whole = (folder / "024.png").read_bytes()
    (folder / "024.png").write_bytes(whole[: len(whole) // 2])
    return folder


def test_predict_streams_each_batch_and_stops_at_the_first_bad_image_with_a_flag_that_exists(
    trained, folder_with_a_bad_image
):
    bad = folder_with_a_bad_image / "024.png"
    result = subprocess.run([*CLI, "predict", str(trained[0]), str(folder_with_a_bad_image), "--batch-size", "8",
                             "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    printed = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert printed == [str(folder_with_a_bad_image / f"{n:03d}.png") for n in range(24)]  # the 3 batches before it
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot read image {bad}: ") and line.endswith("or pass --skip-bad-images")
    help_text = subprocess.run([*CLI, "predict", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--skip-bad-images" in help_text


def test_skip_bad_images_reports_each_on_its_own_line_and_classifies_every_other(trained, folder_with_a_bad_image):
    (folder_with_a_bad_image / "sub").mkdir(exist_ok=True)
    (folder_with_a_bad_image / "sub" / "empty.jpg").write_bytes(b"")
    try:
        result = subprocess.run([*CLI, "predict", str(trained[0]), str(folder_with_a_bad_image), "--batch-size", "8",
                                 "--device", "cpu", "--skip-bad-images", "--json"],
                                capture_output=True, text=True, timeout=120)
    finally:
        (folder_with_a_bad_image / "sub" / "empty.jpg").unlink()
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["path"] for record in records] == [
        str(folder_with_a_bad_image / f"{n:03d}.png") for n in range(40) if n != 24
    ]
    assert result.stderr.splitlines() == [
        f"skipped unreadable image {folder_with_a_bad_image / '024.png'}: image file is truncated",
        f"skipped unreadable image {folder_with_a_bad_image / 'sub' / 'empty.jpg'}: "
        f"cannot identify image file '{folder_with_a_bad_image / 'sub' / 'empty.jpg'}'",
        "skipped 2 unreadable image(s) of 41",
    ]


class FlushRecorder(io.StringIO):
    """A stdout that remembers how many lines had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.lines_at_flush: list[int] = []

    def flush(self):
        self.lines_at_flush.append(self.getvalue().count("\n"))
        super().flush()


def test_results_are_flushed_after_every_batch(trained, folder_with_a_bad_image, monkeypatch, capsys):
    recorder = FlushRecorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    arguments = ["predict", str(trained[0]), str(folder_with_a_bad_image), "--batch-size", "16", "--skip-bad-images"]
    assert cli.main(arguments) == 0
    assert [count for count in recorder.lines_at_flush if count] == [16, 31, 39]  # 024.png skipped in the 2nd batch


def test_a_progress_bar_shows_on_a_terminals_stderr_and_stdout_stays_plain(trained, folder_with_a_bad_image):
    parent, child = pty.openpty()
    result = subprocess.Popen([*CLI, "predict", str(trained[0]), str(folder_with_a_bad_image), "--batch-size", "8",
                               "--skip-bad-images"], stdout=subprocess.PIPE, stderr=child, text=True,
                              env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(child)
    terminal = []
    reader = threading.Thread(target=lambda: terminal.extend(iter(lambda: _read(parent), b"")))
    reader.start()
    out, _ = result.communicate(timeout=120)
    reader.join(timeout=60)
    os.close(parent)
    shown = b"".join(terminal).decode()
    assert result.returncode == 0
    assert "images" in shown and "\x1b[" in shown  # the live bar, drawn with terminal codes
    assert "skipped unreadable image" in shown
    assert "\x1b" not in out and len(out.splitlines()) == 39


def _read(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 4096)
    except OSError:  # the child closed the terminal
        return b""


TAMPERED = [
    ("huge image size", ("preprocessing", "image_size"), 200000, "preprocessing.image_size (200000) must be from 1 to 2048"),
    ("mean not numbers", ("preprocessing", "mean"), "abc", "preprocessing.mean ('abc') must be a list of 3 finite"),
    ("std of zero", ("preprocessing", "std"), [0.2, 0.0, 0.3], "must hold numbers greater than 0"),
    ("unknown interpolation", ("preprocessing", "interpolation"), "sinc", "must be one of nearest, bilinear"),
    ("fewer class names", ("class_names",), ["cat", "dog"], "names 2 classes but num_classes is 3"),
    ("repeated class name", ("class_names",), ["cat", "cat", "fish"], "names a class twice"),
    ("a billion classes", ("num_classes",), 10**9, "num_classes (1000000000) must be from 2 to 100000"),
    ("head params not a mapping", ("head_params",), [16], "head_params ([16]) must be a mapping"),
    ("a nested head param", ("head_params",), {"hidden": {"x": 1}}, "holds hidden={'x': 1}"),
    ("a head param of the wrong type", ("head_params",), {"hidden": "abc", "dropout": 0.25},
     "head 'mlp' of the model in"),
    ("a head too big to allocate", ("head_params",), {"hidden": 10**12, "dropout": 0.25},
     "head.0.bias: the file holds shape [16], the network needs shape [1000000000000]"),
    ("value not a number", ("value",), "high", "value ('high') must be a finite number"),
    ("an empty class name", ("class_names",), ["", "dog", "fish"], "holds an empty or blank name"),
    ("a blank class name", ("class_names",), ["cat", " ", "fish"], "holds an empty or blank name"),
    ("a path as the architecture", ("architecture",), "../../../etc/passwd", "timm has no model '../../../etc/passwd'"),
]


def tamper(run_dir, tmp_path, keys, value):
    """Copy ``run_dir`` and set ``model.json``'s field ``keys`` to ``value``; return the copy and its model.json."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    info_path = (copy / "best").resolve() / "model.json"
    content = json.loads(info_path.read_text())
    target = content
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    info_path.write_text(json.dumps(content))
    return copy, info_path


@pytest.mark.parametrize("keys, value, message", [case[1:] for case in TAMPERED], ids=[case[0] for case in TAMPERED])
def test_a_tampered_model_json_is_one_error_line_naming_the_field(trained, image_dir, tmp_path, capsys, keys, value,
                                                                  message):
    run_dir, info_path = tamper(trained[0], tmp_path, keys, value)
    before = info_path.read_bytes()
    assert cli.main(["predict", str(run_dir), str(image_dir / "a.png"), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith("error: ") and message in line, line
    assert out == "" and info_path.read_bytes() == before  # read, never changed


def test_a_huge_image_size_in_model_json_costs_the_real_command_no_memory(trained, image_dir, tmp_path):
    run_dir, _ = tamper(trained[0], tmp_path, ("preprocessing", "image_size"), 200000)
    command = [*CLI, "predict", str(run_dir), str(image_dir / "a.png"), "--device", "cpu"]
    measure = ("import resource, subprocess, sys; result = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "print(result.stderr, end='')")
    result = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True, timeout=120)
    status, *stderr = result.stdout.splitlines()
    code, peak_kib = map(int, status.split())
    assert code == 2 and len(stderr) == 1 and "image_size (200000) must be from 1 to 2048" in stderr[0]
    assert peak_kib < 1_500_000  # importing torch and reading the file; decoding at 200000 px would need ~480 GB


def test_every_model_json_field_has_a_schema_check():
    fields = {field.name for field in dataclasses.fields(BestModelInfo)}
    assert fields == set(model_schema.FIELDS), "give each new BestModelInfo field a check in storage/model_schema.py"


def test_predict_prints_every_result_before_a_bad_image_in_the_same_batch(trained, tmp_path):
    for number in range(20):
        Image.new("RGB", (24, 24), (number * 10, 90, 60)).save(tmp_path / f"{number:02d}.png")
    (tmp_path / "zz_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = subprocess.run([*CLI, "predict", str(trained[0]), str(tmp_path), "--json", "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [
        str(tmp_path / f"{number:02d}.png") for number in range(20)]
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot read image {tmp_path / 'zz_bad.png'}: ")


def test_predict_on_a_pipe_or_a_device_says_it_is_not_a_regular_file(trained, tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    for path in (tmp_path / "fifo.png", "/dev/zero"):
        result = subprocess.run([*CLI, "predict", str(trained[0]), str(path), "--device", "cpu"],
                                capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [
            f"error: {path} is not a regular file (a device, a pipe or a socket); give image files or folders"]


def test_predict_into_a_closed_pipe_stops_quietly_as_cat_does(trained, image_dir):
    reader, writer = os.pipe()
    os.close(reader)  # `| head -3` that has already exited: the first write finds no reader
    try:
        result = subprocess.run([*CLI, "predict", str(trained[0]), str(image_dir), "--device", "cpu", "--batch-size",
                                 "1"], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_model_json_nested_100000_deep_is_one_error_line(trained, image_dir, tmp_path):
    run_dir, info_path = tamper(trained[0], tmp_path, ("params",), {})
    info_path.write_text(info_path.read_text().replace('"params": {}', '"params": ' + "[" * 100_000 + "]" * 100_000))
    result = subprocess.run([*CLI, "predict", str(run_dir), str(image_dir / "a.png"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {info_path} is nested too deeply to be a model.json; restore it from a backup")


def test_control_characters_in_class_names_are_escaped_in_predicts_lines(trained, image_dir, tmp_path):
    run_dir, _ = tamper(trained[0], tmp_path, ("class_names",), ["\x1b[2J", "tab\there", "new\nline"])
    command = [*CLI, "predict", str(run_dir), str(image_dir), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(lines) == 5 and all(len(fields) == 3 for fields in lines)
    assert {label for _, label, _ in lines} <= {"\\x1b[2J", "tab\\there", "new\\nline"}
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert {json.loads(line)["label"] for line in as_json.stdout.splitlines()} <= {"\x1b[2J", "tab\there", "new\nline"}
