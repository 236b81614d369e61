"""The best-model files: exact round trip, keep-the-best rule, atomicity under SIGKILL, racing workers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from automl_transfer.errors import RunDirError
from automl_transfer.model.network import TransferModel
from automl_transfer.storage.checkpoint import (
    BestModelInfo,
    load_best,
    read_best_info,
    remove_best,
    resolve_best_dir,
    save_best,
    save_best_if_better,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_info(value: float = 0.5, num_classes: int = 3) -> BestModelInfo:
    return BestModelInfo(
        source="timm:test_resnet@none",
        backbone_plugin="timm",
        architecture="test_resnet",
        head="linear",
        head_params={},
        num_classes=num_classes,
        class_names=[f"class{i}" for i in range(num_classes)],
        preprocessing={"image_size": 32, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3},
        params={"lr": 0.001, "head": "linear"},
        metric="accuracy",
        value=value,
        trial=7,
        dataset="synthetic",
    )


def make_resnet_model(num_classes: int = 3, seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    backbone = timm.create_model("test_resnet", num_classes=0)
    return TransferModel(backbone, nn.Linear(backbone.num_features, num_classes), [0.5] * 3, [0.25] * 3)


def small_model(value: float) -> TransferModel:
    """A model whose head bias holds ``value``, so a file's weights tell which save they came from."""
    model = TransferModel(nn.Flatten(), nn.Linear(12, 2), [0.5] * 3, [0.25] * 3)
    with torch.no_grad():
        model.head.bias.fill_(value)
    return model


def test_round_trip_is_bit_identical(tmp_path):
    model = make_resnet_model()
    for _ in range(2):  # non-trivial BatchNorm running statistics
        model.train()(torch.rand(4, 3, 32, 32))
    info = make_info()

    best_dir = save_best(tmp_path, model, info)

    assert (tmp_path / "best").resolve() == best_dir
    stored_info, state = load_best(tmp_path)
    assert stored_info == json.loads((tmp_path / "best" / "model.json").read_text())
    assert stored_info == info.to_dict()
    assert list(stored_info)[0] == "format_version" and stored_info["format_version"] == 1
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(name.startswith(("backbone.", "head.")) for name in state)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype
        assert torch.equal(state[name], tensor), name
    with safe_open(tmp_path / "best" / "model.safetensors", framework="pt") as weights:
        assert weights.metadata() == {"format": "automl_transfer", "format_version": "1"}

    rebuilt = make_resnet_model(seed=1)
    rebuilt.load_state_dict(state, strict=True)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(images), model.eval()(images))


def test_saving_copies_weights_of_tied_and_channels_last_models(tmp_path):
    model = make_resnet_model().to(memory_format=torch.channels_last)
    model.tied = nn.Linear(model.head.in_features, 3)
    model.tied.weight = model.head.weight  # two names, one storage: safetensors refuses shared tensors

    save_best(tmp_path, model, make_info())

    _, state = load_best(tmp_path)
    assert torch.equal(state["tied.weight"], state["head.weight"])
    assert model.head.weight.data_ptr() == model.tied.weight.data_ptr()  # the model itself is untouched


def test_save_best_if_better_keeps_the_better_model(tmp_path):
    assert save_best_if_better(tmp_path, small_model(0.5), make_info(), 0.5, "maximize")
    assert not save_best_if_better(tmp_path, small_model(0.4), make_info(), 0.4, "maximize")
    assert not save_best_if_better(tmp_path, small_model(0.5), make_info(), 0.5, "maximize")  # ties keep the first
    assert not save_best_if_better(tmp_path, small_model(9.0), make_info(), float("nan"), "maximize")
    assert save_best_if_better(tmp_path, small_model(0.75), make_info(value=0.0), 0.75, "MAXIMIZE")

    info, state = load_best(tmp_path)
    assert info["value"] == 0.75  # the value argument wins over info.value
    assert state["head.bias"][0].item() == 0.75
    assert len(list((tmp_path / ".best").iterdir())) == 1


def test_equal_scores_are_told_apart_by_the_validation_loss(tmp_path):
    def info(val_loss):
        return replace(make_info(), metrics={"accuracy": 0.8, "val_loss": val_loss})

    assert save_best_if_better(tmp_path, small_model(0.125), info(0.9), 0.8, "maximize")
    assert not save_best_if_better(tmp_path, small_model(0.25), info(1.2), 0.8, "maximize")  # worse loss
    assert not save_best_if_better(tmp_path, small_model(0.375), make_info(), 0.8, "maximize")  # no loss: first kept
    assert save_best_if_better(tmp_path, small_model(0.5), info(0.5), 0.8, "maximize")  # same accuracy, lower loss
    assert not save_best_if_better(tmp_path, small_model(0.625), info(0.1), 0.7, "maximize")  # the metric comes first

    saved, state = load_best(tmp_path)
    assert saved["metrics"]["val_loss"] == 0.5
    assert state["head.bias"][0].item() == 0.5


def test_minimize_and_bad_direction(tmp_path):
    assert save_best_if_better(tmp_path, small_model(2.0), make_info(), 2.0, "minimize")
    assert not save_best_if_better(tmp_path, small_model(3.0), make_info(), 3.0, "minimize")
    assert save_best_if_better(tmp_path, small_model(1.0), make_info(), 1.0, "minimize")
    assert read_best_info(tmp_path)["value"] == 1.0
    with pytest.raises(ValueError, match="maximize"):
        save_best_if_better(tmp_path, small_model(0.0), make_info(), 0.0, "upward")


def test_leftovers_of_a_crash_are_removed_by_the_next_save(tmp_path):
    save_best(tmp_path, small_model(0.5), make_info(0.5))
    current = (tmp_path / "best").resolve()
    half_written = tmp_path / ".best" / "1-2-crashed"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\x00" * 10)
    stray_link = tmp_path / ".best.link-1-2-crashed"
    os.symlink(".best/1-2-crashed", stray_link)

    assert not save_best_if_better(tmp_path, small_model(0.1), make_info(), 0.1, "maximize")

    assert not half_written.exists() and not os.path.lexists(stray_link)
    assert list((tmp_path / ".best").iterdir()) == [current]
    assert read_best_info(tmp_path)["value"] == 0.5


def test_no_best_model_yet(tmp_path):
    assert read_best_info(tmp_path / "missing") is None
    assert read_best_info(tmp_path) is None
    with pytest.raises(RunDirError, match="does not exist"):
        load_best(tmp_path / "missing")
    with pytest.raises(RunDirError, match=r"no best model in .* yet: run `automl-transfer search"):
        load_best(tmp_path)


def test_every_path_to_a_best_model_resolves(tmp_path):
    best_dir = save_best(tmp_path, small_model(0.5), make_info())
    for path in (tmp_path, tmp_path / "best", best_dir, tmp_path / "best" / "model.json",
                 tmp_path / "best" / "model.safetensors"):
        assert resolve_best_dir(path) == best_dir


def test_a_real_best_directory_is_refused(tmp_path):
    (tmp_path / "best").mkdir()
    with pytest.raises(RunDirError, match="move it away"):
        save_best(tmp_path, small_model(0.5), make_info())


def test_foreign_and_damaged_files_are_refused(tmp_path):
    save_best(tmp_path, small_model(0.5), make_info())
    weights = tmp_path / "best" / "model.safetensors"
    save_file({"head.bias": torch.zeros(2)}, weights)
    with pytest.raises(RunDirError, match="not written by automl-transfer"):
        load_best(tmp_path)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(RunDirError, match="damaged"):
        load_best(tmp_path)
    (tmp_path / "best" / "model.json").write_text("{")
    with pytest.raises(RunDirError, match="not valid JSON"):
        read_best_info(tmp_path)


def test_info_may_be_a_dict_with_the_same_fields(tmp_path):
    content = {**make_info().to_dict(), "metrics": {"accuracy": 0.5, "macro_f1": 0.4}}
    assert save_best_if_better(tmp_path, small_model(0.5), content, 0.5, "maximize")
    assert read_best_info(tmp_path) == content
    with pytest.raises(ValueError, match="no field colour"):
        save_best(tmp_path, small_model(0.5), {**content, "colour": "red"})
    with pytest.raises(TypeError):  # caught before anything is written
        save_best(tmp_path, small_model(0.5), {**content, "params": {"lr": object()}})
    assert read_best_info(tmp_path) == content
    assert len(list((tmp_path / ".best").iterdir())) == 1


def test_remove_best(tmp_path):
    save_best(tmp_path, small_model(0.5), make_info())
    remove_best(tmp_path)
    assert read_best_info(tmp_path) is None
    assert not os.path.lexists(tmp_path / "best") and not (tmp_path / ".best").exists()
    remove_best(tmp_path)  # nothing left to remove
    remove_best(tmp_path / "missing")
    assert save_best_if_better(tmp_path, small_model(0.1), make_info(), 0.1, "maximize")


def test_info_from_dict_validates():
    info = make_info()
    assert BestModelInfo.from_dict(info.to_dict()) == info
    with pytest.raises(RunDirError, match="lacks class_names"):
        BestModelInfo.from_dict({k: v for k, v in info.to_dict().items() if k != "class_names"})
    with pytest.raises(RunDirError, match="format_version 2"):
        BestModelInfo.from_dict({**info.to_dict(), "format_version": 2})


# A helper process that imports torch and warms it up once, then forks writers on request:
# forking is instant, so many SIGKILLs at random moments take a second instead of an import
# each. Torch runs single-threaded there, so no thread pool is broken by the fork.
WRITER_ZYGOTE = r"""
import os, random, sys, time
import torch
from torch import nn
from automl_transfer.storage.checkpoint import BestModelInfo, read_best_info, save_best_if_better
from automl_transfer.model.network import TransferModel

torch.set_num_threads(1)
MODEL = TransferModel(nn.Linear(512, 1024), nn.Linear(1024, 2), [0.5] * 3, [0.5] * 3)  # ~2 MB of weights

def save(run_dir, value):
    with torch.no_grad():
        MODEL.head.bias.fill_(value)
    info = BestModelInfo(source="timm:x@none", backbone_plugin="timm", architecture="x", head="linear",
                         head_params={}, num_classes=2, class_names=["a", "b"],
                         preprocessing={"image_size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
                         params={}, metric="accuracy", value=value, trial=int(value), dataset="synthetic")
    save_best_if_better(run_dir, MODEL, info, value, "maximize")

def save_forever(run_dir):
    current = read_best_info(run_dir)
    value = 0 if current is None else int(current["value"]) + 1
    while True:
        save(run_dir, value)
        value += 1

def race(run_dir, values, start_at):
    while time.time() < start_at:
        pass
    for value in values:
        save(run_dir, value)

def fork(work, *args):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work(*args)
            code = 0
        finally:
            os._exit(code)
    return pid

print("ready", flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "spawn":
        print(fork(save_forever, args[0]), flush=True)
    elif command == "reap":
        os.waitpid(int(args[0]), 0)
        print("reaped", flush=True)
    elif command == "race":
        run_dir, n_values = args[0], int(args[1])
        start_at = time.time() + 0.2
        value_lists = [list(range(worker, n_values, 2)) for worker in range(2)]
        for values in value_lists:
            random.Random(len(values)).shuffle(values)
        pids = [fork(race, run_dir, values, start_at) for values in value_lists]
        codes = {}
        deadline = time.time() + 60
        while len(codes) < len(pids) and time.time() < deadline:
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[pid] = os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        for pid in pids:
            if pid not in codes:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                codes[pid] = "timeout"
        print(*(codes[pid] for pid in pids), flush=True)
"""


@pytest.fixture(scope="module")
def writer_zygote():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )

    def ask(command: str) -> str:
        process.stdin.write(command + "\n")
        process.stdin.flush()
        return process.stdout.readline().strip()

    assert process.stdout.readline().strip() == "ready"
    try:
        yield ask
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_best_is_complete(run_dir: Path) -> float:
    info, state = load_best(run_dir)
    assert BestModelInfo.from_dict(info).trial == int(info["value"])
    assert state["head.bias"].tolist() == [info["value"]] * 2  # weights and info come from the same save
    assert state["backbone.weight"].shape == (1024, 512)
    return info["value"]


def wait_for_a_new_best(run_dir: Path, after: float | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = read_best_info(run_dir)
        if info is not None and (after is None or info["value"] > after):
            return
        time.sleep(0.002)
    raise AssertionError(f"no new best model in {run_dir} within 30 s")


def test_best_survives_sigkill_at_random_moments(tmp_path, writer_zygote):
    rng = random.Random(1234)
    values = []
    n_reads = 0
    for _ in range(12):
        pid = int(writer_zygote(f"spawn {tmp_path}"))
        try:
            wait_for_a_new_best(tmp_path, after=values[-1] if values else None)
            kill_at = time.monotonic() + rng.uniform(0.0, 0.04)  # a few saves take that long
            while time.monotonic() < kill_at:  # readers take no lock: they must still see whole models
                if read_best_info(tmp_path) is not None:
                    assert_best_is_complete(tmp_path)
                    n_reads += 1
        finally:
            os.kill(pid, signal.SIGKILL)
            assert writer_zygote(f"reap {pid}") == "reaped"
        values.append(assert_best_is_complete(tmp_path))

    assert values == sorted(set(values))  # every writer saved before it was killed
    assert n_reads > 0
    save_best_if_better(tmp_path, small_model(0.0), make_info(), -1.0, "maximize")  # cleans up, writes nothing
    assert list((tmp_path / ".best").iterdir()) == [(tmp_path / "best").resolve()]
    assert not list(tmp_path.glob(".best.link-*"))


def test_racing_workers_leave_the_best_model(tmp_path, writer_zygote):
    n_values = 40
    assert writer_zygote(f"race {tmp_path} {n_values}") == "0 0"
    assert assert_best_is_complete(tmp_path) == n_values - 1
    assert len(list((tmp_path / ".best").iterdir())) == 1
