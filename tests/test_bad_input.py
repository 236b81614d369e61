"""Bad input: one clear line, exit code 2, no traceback, and the run dir left exactly as it was.

Each case runs the command line's ``main`` (what the ``automl-transfer`` script calls) in this
process, to keep the suite fast; one case per mechanism also runs as a real process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from search_processes import CLI, DATASET, SPACE, write_space

from automl_transfer import TransferSearch
from automl_transfer.commands.cli import main

GOOD_SPACE = SPACE % {"epochs": 1}


class PlantedPayload:
    """Pickles as a call that creates ``marker``: proof of execution if the file ever appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad datasets, spaces and weight files, and a finished search whose run dir must not change."""
    root = tmp_path_factory.mktemp("bad-input")
    image = Image.new("RGB", (8, 8), color=(120, 30, 200))
    for dataset, classes in {"one_class": {"a": 2}, "empty_class": {"a": 2, "b": 0}, "corrupt": {"a": 2, "b": 2}}.items():
        for name, count in classes.items():
            (root / dataset / name).mkdir(parents=True)
            for index in range(count):
                image.save(root / dataset / name / f"{index}.png")
    (root / "corrupt" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    for dataset in ("loop", "crossed"):
        for name in ("elephant", "zebra"):
            (root / dataset / name).mkdir(parents=True)
            for index in range(3):
                image.save(root / dataset / name / f"{index}.png")
    (root / "loop" / "elephant" / "loop").symlink_to("..")  # every class's images would become elephants
    (root / "crossed" / "elephant" / "stripes").symlink_to("../zebra")
    (root / "a_file.txt").write_text("not a folder")

    spaces = {
        "good": GOOD_SPACE,
        "malformed": "source: [timm:test_resnet@none\nlr: {low: 1",
        "range": GOOD_SPACE.replace("low: 1.0e-3, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-3"),
        "plugin": GOOD_SPACE.replace("timm:test_resnet", "timx:test_resnet"),
        "model": GOOD_SPACE.replace("timm:test_resnet", "timm:test_resnett"),
        "head": GOOD_SPACE.replace("head: linear", "head: linaer"),
        "other": GOOD_SPACE.replace("epochs: 1", "epochs: 2"),
        "huge": GOOD_SPACE.replace("image_size: 16", "image_size: 100000"),
        "batch1": GOOD_SPACE.replace("batch_size: 16", "batch_size: 1"),
    }
    vit_weights = root / "vit.safetensors"
    save_file(timm.create_model("test_vit", pretrained=False).state_dict(), vit_weights)
    spaces["mismatch"] = GOOD_SPACE.replace("test_resnet@none", f"test_resnet@{vit_weights}")
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), root / "plain.pt")
    spaces["forced"] = GOOD_SPACE.replace("test_resnet@none", f"test_resnet@{root / 'plain.pt'}")
    torch.save({"conv1.weight": PlantedPayload(root / "payload-ran")}, root / "malicious.pt")
    spaces["pickle"] = GOOD_SPACE.replace("test_resnet@none", f"test_resnet@{root / 'malicious.pt'}")
    for name, text in spaces.items():
        (root / f"{name}.yaml").write_text(text)
    for name, text in {"many": "trials: many\n", "no": 'quiet: "no"\n', "date": "seed: 2024-05-01\n"}.items():
        (root / f"job-{name}.yaml").write_text(text)

    TransferSearch(dataset=DATASET, space=str(write_space(root, epochs=1)), trials=1, run_dir=root / "run",
                   quiet=True).run()
    return root


def search(root: Path, *changes: str, dataset: str = DATASET, space: str = "good", run_dir: str = "run") -> list[str]:
    return ["search", "--dataset", dataset, "--space", str(root / f"{space}.yaml"), "--trials", "1",
            "--run-dir", str(root / run_dir), *changes]


# (id, arguments from the inputs folder, words the message must hold, run dir that must not change or appear)
CASES = [
    ("missing dataset", lambda r: search(r, dataset=f"imagefolder:{r / 'nowhere'}"), ["nowhere", "does not exist"], "run"),
    ("dataset is a file", lambda r: search(r, dataset=f"imagefolder:{r / 'a_file.txt'}"), ["is not a folder"], "run"),
    ("one class", lambda r: search(r, dataset=f"imagefolder:{r / 'one_class'}"), ["at least 2 classes"], "run"),
    ("empty class", lambda r: search(r, dataset=f"imagefolder:{r / 'empty_class'}"), ["holds no images"], "run"),
    ("corrupt image", lambda r: search(r, dataset=f"imagefolder:{r / 'corrupt'}", run_dir="fresh"),
     ["broken.png"], "fresh"),
    ("symlink loop", lambda r: search(r, dataset=f"imagefolder:{r / 'loop'}"),
     ["elephant/loop is a link to", "contains it", "remove the link"], "run"),
    ("two paths to one image", lambda r: search(r, dataset=f"imagefolder:{r / 'crossed'}"),
     ["same image file", "stripes"], "run"),
    ("unknown dataset plugin", lambda r: search(r, dataset="digitz"), ["digitz", "digits"], "run"),
    ("unknown backbone plugin", lambda r: search(r, space="plugin"), ["timx", "timm"], "run"),
    ("unknown source model", lambda r: search(r, space="model"), ["test_resnett", "test_resnet"], "run"),
    ("unknown head", lambda r: search(r, space="head"), ["linaer", "linear"], "run"),
    ("malformed YAML", lambda r: search(r, space="malformed"), ["malformed.yaml"], "run"),
    ("invalid range", lambda r: search(r, space="range"), ["lr", "greater than high"], "run"),
    ("unreachable storage", lambda r: search(r, "--storage", "postgresql://nobody:secret@127.0.0.1:9/none"),
     ["cannot open storage", "nobody:***@127.0.0.1:9"], "run"),
    ("in-memory sqlite", lambda r: search(r, "--storage", "sqlite:///", run_dir="memory"),
     ["--storage sqlite:/// is an in-memory SQLite database", "give a file"], "memory"),
    ("sqlite without a path", lambda r: search(r, "--storage", "sqlite://", run_dir="memory"),
     ["--storage sqlite:// is an in-memory SQLite database"], "memory"),
    ("sqlite :memory:", lambda r: search(r, "--storage", "sqlite:///:memory:", run_dir="memory"),
     ["in-memory SQLite database"], "memory"),
    ("run dir under a file", lambda r: search(r, run_dir="a_file.txt/run"), ["a_file.txt", "is a file"], "run"),
    ("run dir is a file", lambda r: search(r, run_dir="a_file.txt"), ["a_file.txt", "not a directory"], "run"),
    ("different dataset", lambda r: search(r, dataset=DATASET.replace("per_class=20", "per_class=21")),
     ["holds study", "dataset", "pass --force-new to delete it (1 trial(s) and its best model)"], "run"),
    ("different space", lambda r: search(r, space="other"), ["holds study", "space", "--force-new"], "run"),
    ("weights do not fit", lambda r: search(r, space="mismatch"), ["vit.safetensors", "architecture"], "run"),
    ("pickle beyond tensors", lambda r: search(r, space="pickle"), ["malicious.pt", "nothing from it was executed"], "run"),
    ("image size too large to decode", lambda r: search(r, space="huge"), ["image_size", "100000 must be at most 2048"],
     "run"),
    ("job file: trials not a number", lambda r: search(r, "--config", str(r / "job-many.yaml")),
     ["job-many.yaml: trials is 'many'; it must be a whole number"], "run"),
    ("job file: quiet as text", lambda r: search(r, "--config", str(r / "job-no.yaml")),
     ["job-no.yaml: quiet is 'no'; it must be true or false"], "run"),
    ("job file: a date for a seed", lambda r: search(r, "--config", str(r / "job-date.yaml")),
     ["seed is datetime.date(2024, 5, 1); it must be a whole number"], "run"),
    ("batch size 1", lambda r: search(r, space="batch1"),
     ["batch_size: 1 must be at least 2 (BatchNorm layers cannot train on one image at a time)"], "run"),
    ("zero trials", lambda r: search(r, "--trials", "0"), ["--trials", "positive"], "run"),
    ("negative trials", lambda r: search(r, "--trials", "-3"), ["--trials", "positive"], "run"),
    ("negative workers", lambda r: search(r, "--workers", "-1"), ["--workers", "not -1"], "run"),
    ("worker without a search", lambda r: ["worker", "--run-dir", str(r / "one_class")], ["holds no search"], "run"),
]


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: file contents, link targets, and directories."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            entries[key] = "dir"
        else:
            entries[key] = path.read_bytes()
    return entries


@pytest.mark.parametrize("arguments, words, guarded", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gives_one_line_exit_2_and_leaves_the_run_dir_alone(inputs, capsys, arguments, words, guarded):
    before = snapshot(inputs / guarded) if (inputs / guarded).exists() else None
    code = main(arguments(inputs))
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in out + err
    if before is None:
        assert not (inputs / guarded).exists()
    else:
        assert snapshot(inputs / guarded) == before


def test_torch_force_no_weights_only_load_is_refused(inputs, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    before = snapshot(inputs / "run")
    assert main(search(inputs, space="forced")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set" in line and "plain.pt" in line
    assert snapshot(inputs / "run") == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder, so none can be made unreadable")
def test_unreadable_dataset_folder(inputs, capsys, tmp_path):
    folder = tmp_path / "locked"
    (folder / "a").mkdir(parents=True)
    folder.chmod(0)
    try:
        assert main(search(inputs, dataset=f"imagefolder:{folder}")) == 2
    finally:
        folder.chmod(0o755)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot read dataset" in line and "ermission" in line


def test_a_planted_pickle_is_refused_and_never_runs_in_the_real_command(inputs):
    before = snapshot(inputs / "run")
    result = subprocess.run([*CLI, *search(inputs, space="pickle")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: refusing to read") and "malicious.pt" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert not (inputs / "payload-ran").exists()
    assert snapshot(inputs / "run") == before


def test_a_symlink_loop_is_refused_by_the_real_command_before_anything_is_written(inputs):
    before = snapshot(inputs / "run")
    result = subprocess.run([*CLI, *search(inputs, dataset=f"imagefolder:{inputs / 'loop'}")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {inputs / 'loop' / 'elephant' / 'loop'} is a link to {inputs / 'loop'}")
    assert snapshot(inputs / "run") == before


def read_only(folder: Path) -> list[str] | None:
    """A command prefix that runs a command with ``folder`` read-only, or ``None`` where none can be made.

    In a user and mount namespace ``folder`` is bind-mounted read-only (even root cannot write
    it there); without namespaces, a user other than root gets the folder's write bits cleared.
    """
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "sh", "-c", script, str(folder), "true"],
                                                   capture_output=True).returncode == 0:
        return ["unshare", "-rm", "sh", "-c", script, str(folder)]
    return None


def test_report_on_a_read_only_run_dir_prints_the_leaderboard_then_one_error_line(inputs, tmp_path):
    prefix = read_only(inputs / "run")
    if prefix is None:
        pytest.skip("no user and mount namespaces (unshare -rm) to make a read-only run dir")
    before = snapshot(inputs / "run")
    report = subprocess.run([*prefix, *CLI, "report", str(inputs / "run")], capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and "Leaderboard" in report.stdout
    (line,) = report.stderr.splitlines()
    assert line == (f"error: cannot write the plots into {inputs / 'run' / 'report'}: Read-only file system; "
                    "pass --plots DIR to write them elsewhere")
    elsewhere = subprocess.run([*prefix, *CLI, "report", str(inputs / "run"), "--plots", str(tmp_path / "plots")],
                               capture_output=True, text=True, timeout=120)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (tmp_path / "plots" / "history.html").is_file() and elsewhere.stderr == ""
    assert snapshot(inputs / "run") == before
