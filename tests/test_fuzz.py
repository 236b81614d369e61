"""Hostile input, generated: every space, job file, CSV manifest and model.json ends in a result or one error line.

Hypothesis builds each input from a valid one, changing, dropping and adding keys, values
and rows (or, now and then, writing arbitrary text or bytes instead). Each is handed to the
command line's ``main`` in this process, as the ``automl-transfer`` script would, and must end
in exit 0, or in exit 2 with stderr ending in exactly one ``error: ...`` line, never in an
exception. The examples are derived from a fixed seed and bounded in number (the whole module
runs in well under a minute), so a failure is reproducible and the suite stays fast.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main

#: A dataset small enough that a valid space decodes it in a blink, even at the largest image size.
DATASET = "synthetic:classes=2,per_class=3,size=8"
TINY_SPACE = Path(__file__).parent / "data" / "tiny-space.yaml"
VALID_SPACE = {"source": ["timm:test_resnet@none"], "head": "linear", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
               "epochs": 1, "batch_size": 2, "image_size": 16}
SPACE_KEYS = ["source", "freeze_depth", "lr", "weight_decay", "l2sp", "head", "epochs", "batch_size", "image_size",
              "label_smoothing", "augment", "warmup_epochs", "extra", "sorce", "low"]
JOB_KEYS = ["dataset", "space", "trials", "timeout", "study", "device", "seed", "metric", "pruner", "sampler",
            "val-fraction", "skip_bad_images", "compile", "force-new", "quiet", "devices", "heartbeat-interval",
            "seeds", "run dir"]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5000), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "linear", "mlp", "none", "timm:test_resnet@none", "timm:test_resnet@../../etc/passwd",
                     "1e-3", "no", "many", "cuda", "cpu", "auto", "tpe", "loss", "~nosuchuser/x", "a\x00b"]),
    st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=8)
ranges = st.fixed_dictionaries({}, optional={"low": scalars, "high": scalars, "log": scalars, "step": scalars})


def assert_result_or_one_error_line(arguments: list[str], capsys: pytest.CaptureFixture) -> None:
    """Run the CLI's ``main``; it must return 0, or 2 with stderr ending in exactly one ``error:`` line."""
    try:
        code = main(arguments)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert code in (0, 2), (code, err)
    event(f"exit {code}")  # pytest --hypothesis-show-statistics shows how many inputs got how far
    if code == 2:
        lines = err.rstrip("\n").splitlines()
        assert lines and [line for line in lines if line.startswith("error: ")] == lines[-1:], err


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fresh_run_dir(scratch: Path) -> str:
    return tempfile.mkdtemp(dir=scratch, prefix="run-")


@st.composite
def spaces(draw) -> str:
    """Search-space YAML: a valid space with keys changed, dropped or added, or arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    space: dict[Any, Any] = dict(VALID_SPACE)
    for key in draw(st.lists(st.sampled_from(SPACE_KEYS), max_size=4)):
        space[key] = draw(st.one_of(values, ranges, st.integers(1, 2048), st.sampled_from([None, [], {}])))
    for key in draw(st.lists(st.sampled_from(list(VALID_SPACE)), max_size=2)):
        space.pop(key, None)
    return yaml.safe_dump(space, allow_unicode=True)


@given(text=spaces())
@FUZZ
def test_any_search_space_ends_in_a_result_or_one_error_line(text: str, scratch: Path, capsys) -> None:
    path = scratch / "space.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_result_or_one_error_line(["search", "--dataset", DATASET, "--space", str(path), "--trials", "1",
                                     "--workers", "0", "--run-dir", fresh_run_dir(scratch), "--quiet"], capsys)


@st.composite
def job_files(draw) -> str:
    """Job-file YAML: any of its keys (and a few wrong ones) with any values, or arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    job = {key: draw(values) for key in draw(st.lists(st.sampled_from(JOB_KEYS), max_size=5, unique=True))}
    return yaml.safe_dump(job, allow_unicode=True)


@given(text=job_files(), with_dataset=st.booleans())
@FUZZ
def test_any_job_file_ends_in_a_result_or_one_error_line(text: str, with_dataset: bool, scratch: Path, capsys) -> None:
    path = scratch / "job.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    # The flags keep the search to recording it (no trials), in a fresh run dir, on the tiny space.
    flags = ["--workers", "0", "--run-dir", fresh_run_dir(scratch), "--space", str(TINY_SPACE), "--device", "cpu"]
    assert_result_or_one_error_line(["search", "--config", str(path), *flags,
                                     *(["--dataset", DATASET] if with_dataset else [])], capsys)


@pytest.fixture(scope="module")
def manifest_folder(scratch: Path) -> Path:
    folder = scratch / "manifest"
    (folder / "images").mkdir(parents=True)
    for index in range(4):
        Image.new("RGB", (10, 10), (60 * index, 90, 200)).save(folder / "images" / f"{index}.png")
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


cells = st.one_of(st.sampled_from(["images/0.png", "images/1.png", "images/2.png", "images/3.png", "images/broken.png",
                                   "images/missing.png", "../manifest/images/0.png", "/", "", "images", "~nosuchuser/a.png",
                                   "cat", "dog", "1", "train", "val", "test", "valid", "TEST", " ", "a\x00b"]),
                  st.text(max_size=10))


VALID_ROWS = [["images/0.png", "cat", "train"], ["images/1.png", "cat", "train"], ["images/2.png", "dog", "train"],
              ["images/3.png", "dog", "val"]]


@st.composite
def manifests(draw) -> bytes:
    """A CSV manifest: valid rows with cells changed, rows added or dropped, another header; or any bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=120))
    header = draw(st.sampled_from([["path", "label", "split"]] * 4 + [["path", "label"], ["Path", " LABEL "],
                                                                        ["label", "path", "note"], ["path"], []]))
    rows = [list(row) for row in VALID_ROWS]
    for _ in range(draw(st.integers(0, 3))):
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][draw(st.integers(0, 2))] = draw(cells)
    rows += draw(st.lists(st.lists(cells, max_size=4), max_size=3))
    rows = rows[draw(st.integers(0, 2)):]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + text.getvalue().encode("utf-8", "surrogatepass")


@given(content=manifests())
@FUZZ
def test_any_csv_manifest_ends_in_a_result_or_one_error_line(content: bytes, manifest_folder: Path, scratch: Path,
                                                             capsys) -> None:
    path = manifest_folder / "labels.csv"
    path.write_bytes(content)
    assert_result_or_one_error_line(["search", "--dataset", f"csv:{path}", "--space", str(TINY_SPACE), "--trials", "1",
                                     "--workers", "0", "--run-dir", fresh_run_dir(scratch), "--quiet"], capsys)


@pytest.fixture(scope="module")
def saved_model(scratch: Path) -> tuple[Path, dict, Path]:
    """A run dir whose best model a real 1-trial search saved; its model.json content; an image to predict."""
    run_dir = scratch / "model-run"
    TransferSearch(dataset=DATASET, space=str(TINY_SPACE), trials=1, run_dir=run_dir, quiet=True, device="cpu").run()
    image = scratch / "image.png"
    Image.new("RGB", (12, 12), (10, 200, 30)).save(image)
    info_path = (run_dir / "best").resolve() / "model.json"
    return run_dir, json.loads(info_path.read_text()), image


def paths_of(content: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON value (list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(content, dict):
        for key, value in content.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(content, list):
        for index, value in enumerate(content):
            found += paths_of(value, (*prefix, index))
    return found


@st.composite
def model_jsons(draw, original: dict) -> str:
    """model.json: the saved one with values replaced, keys dropped or added, or arbitrary text."""
    if draw(st.integers(0, 14)) == 0:
        return draw(st.text(max_size=60))
    content = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(content)))
        parent = content
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "drop" and isinstance(parent, dict):
            parent.pop(path[-1])
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
        else:
            parent[path[-1]] = draw(st.one_of(values, st.integers(-10, 10**12), st.sampled_from([[0.5] * 3, [0.0] * 3])))
    return json.dumps(content, allow_nan=True)


@pytest.fixture
def model_json_under_test(saved_model):
    run_dir, original, image = saved_model
    info_path = (run_dir / "best").resolve() / "model.json"
    yield run_dir, original, image, info_path
    info_path.write_text(json.dumps(original))


@given(data=st.data())
@settings(FUZZ, max_examples=70)
def test_any_model_json_ends_in_predictions_or_one_error_line(data, model_json_under_test, capsys) -> None:
    run_dir, original, image, info_path = model_json_under_test
    info_path.write_text(data.draw(model_jsons(original)), encoding="utf-8", errors="surrogatepass")
    assert_result_or_one_error_line(["predict", str(run_dir), str(image), "--device", "cpu"], capsys)

