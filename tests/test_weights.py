"""Local weight files: safetensors and torch files round trip, bad files are refused safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models

from automl_transfer.errors import WeightsError
from automl_transfer.model.network import TransferModel
from automl_transfer.model.sources import build_backbone
from automl_transfer.model.weights import (
    OWN_FORMAT,
    apply_backbone_weights,
    load_weights_file,
)
from automl_transfer.storage import checkpoint


@pytest.fixture
def classifier_state() -> dict[str, torch.Tensor]:
    """The state dict of a ``test_resnet`` trained for 10 classes: backbone plus ``fc``."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).state_dict()


def assert_backbone_holds(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert loaded.keys() <= state.keys()
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


def test_safetensors_round_trip_drops_the_old_classifier(tmp_path, classifier_state, monkeypatch):
    save_file(classifier_state, tmp_path / "src.safetensors")
    monkeypatch.chdir(tmp_path)

    backbone = build_backbone("timm:test_resnet@./src.safetensors")

    assert_backbone_holds(backbone.module, classifier_state)
    assert not any(name.startswith("fc.") for name in backbone.module.state_dict())
    assert backbone.module(torch.rand(2, 3, 64, 64)).shape == (2, backbone.num_features)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_file_round_trip(tmp_path, classifier_state, suffix):
    path = tmp_path / f"src{suffix}"
    torch.save(classifier_state, path)

    backbone = build_backbone(f"timm:test_resnet@{path}")

    assert_backbone_holds(backbone.module, classifier_state)


def test_torch_checkpoint_nesting_its_state_dict_loads(tmp_path, classifier_state):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": classifier_state, "epoch": 3}, path)

    assert load_weights_file(path).keys() == classifier_state.keys()


def test_torchvision_backbone_loads_a_file_with_its_1000_class_classifier(tmp_path):
    torch.manual_seed(0)
    state = models.get_model("mobilenet_v3_small", weights=None).state_dict()
    save_file(state, tmp_path / "mobilenet.safetensors")

    backbone = build_backbone(f"torchvision:mobilenet_v3_small@{tmp_path / 'mobilenet.safetensors'}")

    assert_backbone_holds(backbone.module, state)
    assert "classifier.3.weight" not in backbone.module.state_dict()


def test_our_best_model_file_yields_its_backbone(tmp_path, classifier_state):
    source = timm.create_model("test_resnet", num_classes=0)
    source.load_state_dict(classifier_state, strict=False)
    trained = TransferModel(source, nn.Linear(source.num_features, 3), mean=(0.5,) * 3, std=(0.5,) * 3)
    save_file(trained.state_dict(), tmp_path / "model.safetensors", metadata={"format": OWN_FORMAT})

    backbone = build_backbone(f"timm:test_resnet@{tmp_path / 'model.safetensors'}")

    assert_backbone_holds(backbone.module, source.state_dict())


def test_the_best_model_writer_uses_the_format_the_loader_recognises():
    assert checkpoint.SAFETENSORS_METADATA["format"] == OWN_FORMAT


def test_missing_backbone_keys_are_named(tmp_path, classifier_state):
    del classifier_state["layer1.0.conv1.weight"]
    save_file(classifier_state, tmp_path / "partial.safetensors")

    with pytest.raises(WeightsError, match=r"lacks 1 .*layer1\.0\.conv1\.weight"):
        build_backbone(f"timm:test_resnet@{tmp_path / 'partial.safetensors'}")


def test_weights_of_another_shape_are_a_weights_error_naming_the_keys(classifier_state):
    module = timm.create_model("test_resnet", num_classes=0)
    classifier_state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)

    with pytest.raises(WeightsError, match=r"does not fit.*layer1\.0\.conv1\.weight \(1, 1, 1, 1\)"):
        apply_backbone_weights(module, classifier_state, origin="src.safetensors")


def test_another_architectures_weights_are_refused(tmp_path):
    save_file(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.safetensors")

    with pytest.raises(WeightsError, match="lacks"):
        build_backbone(f"timm:test_resnet@{tmp_path / 'convnext.safetensors'}")


class CreatesMarkerWhenUnpickled:
    """Unpickling this object opens (so creates) the file ``marker``: a stand-in for any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_is_refused_and_never_executed(tmp_path, classifier_state):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({**classifier_state, "payload": CreatesMarkerWhenUnpickled(marker)}, path)

    with pytest.raises(WeightsError, match="refusing .* pickled Python objects"):
        build_backbone(f"timm:test_resnet@{path}")

    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load does run it
    assert marker.exists()


def test_torch_force_no_weights_only_load_is_refused(tmp_path, classifier_state, monkeypatch):
    path = tmp_path / "clean.pt"
    torch.save(classifier_state, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    with pytest.raises(WeightsError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set"):
        load_weights_file(path)


def test_a_missing_file_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_backbone(f"timm:test_resnet@{tmp_path / 'absent.safetensors'}")


def test_a_corrupt_safetensors_file_is_a_weights_error(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"not a safetensors file")

    with pytest.raises(WeightsError, match="cannot read"):
        load_weights_file(path)


def test_a_torch_file_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)

    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_weights_file(path)


def test_an_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"not a state dict")

    with pytest.raises(WeightsError, match=r"\.safetensors, \.pt, \.pth, \.bin"):
        load_weights_file(path)
