"""Backbone plugins and sources: one contract for every plugin, then each plugin's own rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from torch import nn
from torchvision import models

from automl_transfer import registry as plugins
from automl_transfer.contract.components import Backbone
from automl_transfer.errors import PluginError, UnknownComponentError, WeightsError
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import build_backbone
from automl_transfer.plugin import hookimpl

#: Small models, with random weights, on which every backbone plugin is checked.
CONTRACT_SOURCES = {
    "timm": ["timm:test_resnet@none", "timm:test_vit@none", "timm:test_convnext@none"],
    "torchvision": ["torchvision:mobilenet_v3_small@none", "torchvision:resnet18@none"],
    "lite": ["lite:lite0@none"],
}

DATA_CONFIG_KEYS = {"input_size", "mean", "std", "interpolation", "crop_pct"}

#: How long a failed download may take; huggingface_hub's own retries take about a minute.
QUICK_FAILURE_SECONDS = 20


def test_every_registered_backbone_plugin_has_contract_sources():
    registered = {component.name for component in plugins.components("backbone")}

    assert registered <= CONTRACT_SOURCES.keys(), "add a tiny model for each backbone plugin to CONTRACT_SOURCES"


@pytest.mark.parametrize("source", [source for sources in CONTRACT_SOURCES.values() for source in sources])
def test_backbone_contract(source):
    torch.manual_seed(0)
    backbone = build_backbone(source)
    assert isinstance(backbone, Backbone)

    channels, height, width = backbone.data_config["input_size"]
    backbone.module.eval()
    with torch.no_grad():
        features = backbone.module(torch.rand(2, channels, height, width))
    assert channels == 3 and features.shape == (2, backbone.num_features)

    assert DATA_CONFIG_KEYS <= backbone.data_config.keys()
    assert len(backbone.data_config["mean"]) == len(backbone.data_config["std"]) == 3
    assert 0 < backbone.data_config["crop_pct"] <= 1

    position = {name: index for index, (name, _) in enumerate(backbone.module.named_parameters())}
    trainable = [name for name, parameter in backbone.module.named_parameters() if parameter.requires_grad]
    grouped = [name for group in backbone.param_groups for name in group]
    assert sorted(grouped) == sorted(trainable)
    assert all(backbone.param_groups) and len(backbone.param_groups) >= 3
    firsts = [min(position[name] for name in group) for group in backbone.param_groups]
    assert firsts == sorted(firsts), "groups must run from the input to the output"

    rebuilt = build_backbone(f"{SourceSpec.parse(source).plugin}:{backbone.architecture}@none")
    assert rebuilt.module.state_dict().keys() == backbone.module.state_dict().keys()

    frozen = freeze_backbone(backbone, 1.0)
    assert frozen.n_frozen_groups == len(backbone.param_groups)
    assert not any(parameter.requires_grad for parameter in backbone.module.parameters())


@pytest.mark.parametrize(
    ("text", "plugin", "model", "weights"),
    [
        ("timm:resnet50.a1_in1k", "timm", "resnet50.a1_in1k", None),
        ("timm:test_resnet@./src.safetensors", "timm", "test_resnet", "./src.safetensors"),
        ("timm:resnet18@none", "timm", "resnet18", "none"),
        ("torchvision:resnet50@IMAGENET1K_V2", "torchvision", "resnet50", "IMAGENET1K_V2"),
    ],
)
def test_source_parses_and_prints_back(text, plugin, model, weights):
    spec = SourceSpec.parse(text)

    assert (spec.plugin, spec.model, spec.weights) == (plugin, model, weights)
    assert str(spec) == text


def test_none_is_matched_in_any_case():
    assert str(SourceSpec.parse("timm:resnet18@None")) == "timm:resnet18@none"


@pytest.mark.parametrize(
    ("weights", "is_file"),
    [("IMAGENET1K_V2", False), ("a1_in1k", False), ("none", False), ("w.SAFETENSORS", True),
     ("w.pt", True), ("w.pth", True), ("runs/pets/best/model", True)],
)
def test_weights_that_look_like_files_are_files(weights, is_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    found = SourceSpec("timm", "resnet18", weights).weights_file

    assert found == ((tmp_path / weights).resolve() if is_file else None)


@pytest.mark.parametrize("text", ["resnet50", "timm:", ":resnet50", "timm:resnet50@"])
def test_malformed_sources_show_the_format(text):
    with pytest.raises(UnknownComponentError, match="PLUGIN:MODEL|without weights"):
        SourceSpec.parse(text)


def test_an_unknown_plugin_names_close_matches():
    with pytest.raises(UnknownComponentError, match="did you mean 'timm'"):
        build_backbone("timmm:resnet18@none")


class RecordingBuilder:
    """A backbone plugin that remembers the weights its builder was given."""

    def __init__(self, result=None):
        self.weights_seen: list[object] = []
        self.result = result

    def build(self, model, weights):
        self.weights_seen.append(weights)
        if self.result is not None:
            return self.result
        module = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return Backbone(module, 2, {}, [["0.weight", "0.bias"]], model)

    @hookimpl
    def register_backbones(self, register):
        register("recording", self.build)


def test_weight_files_never_reach_the_builder(register_plugin, tmp_path):
    recorder = register_plugin(RecordingBuilder(), "recording-plugin")
    state = nn.Sequential(nn.Conv2d(3, 2, 1)).state_dict()
    save_file(state, tmp_path / "w.safetensors")

    backbone = build_backbone(f"recording:tiny@{tmp_path / 'w.safetensors'}")
    build_backbone("recording:tiny@sometag")

    assert recorder.weights_seen == ["none", "sometag"]
    assert torch.equal(backbone.module[0].weight, state["0.weight"])


def test_a_builder_returning_something_else_is_a_plugin_error(register_plugin):
    register_plugin(RecordingBuilder(result=nn.Identity()), "recording-plugin")

    with pytest.raises(PluginError, match="not a Backbone"):
        build_backbone("recording:tiny")


def test_timm_unknown_architecture_names_close_matches():
    with pytest.raises(UnknownComponentError, match="did you mean timm:test_resnet"):
        build_backbone("timm:test_resnt@none")


def test_timm_unknown_tag_lists_the_known_ones():
    with pytest.raises(WeightsError, match="no pretrained tag 'bogus' .*r160_in1k"):
        build_backbone("timm:test_resnet@bogus")


def test_timm_two_different_tags_are_refused():
    with pytest.raises(WeightsError, match="two pretrained tags"):
        build_backbone("timm:resnet50.a1_in1k@a2_in1k")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An offline Hugging Face Hub with an empty cache, as ``HF_HUB_OFFLINE=1`` gives at start-up."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def plant_in_hub_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """Lay ``state`` out as huggingface_hub caches ``model.safetensors`` of ``repo_id``."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, snapshot / "model.safetensors")


@pytest.mark.parametrize("source", ["timm:test_resnet", "timm:test_resnet@r160_in1k", "timm:test_resnet.r160_in1k"])
def test_timm_pretrained_weights_load_from_the_hub_cache_offline(offline_hub, source):
    torch.manual_seed(0)
    state = timm.create_model("test_resnet").state_dict()
    plant_in_hub_cache(offline_hub, "timm/test_resnet.r160_in1k", state)

    backbone = build_backbone(source)

    assert backbone.architecture == "test_resnet.r160_in1k"
    assert torch.equal(backbone.module.state_dict()["layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])


def test_timm_weights_missing_offline_fail_at_once_with_alternatives(offline_hub):
    started = time.monotonic()
    with pytest.raises(WeightsError) as raised:
        build_backbone("timm:test_resnet")

    assert time.monotonic() - started < QUICK_FAILURE_SECONDS
    message = str(raised.value)
    assert "could not be downloaded" in message and "not in the cache" in message
    assert "timm:test_resnet@/path/to/weights.safetensors" in message and "timm:test_resnet@none" in message


def test_timm_unreachable_hub_fails_after_one_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    try:
        build_backbone("timm:test_resnet")
    except WeightsError as error:
        assert time.monotonic() - started < QUICK_FAILURE_SECONDS
        assert "@none" in str(error) and "@/path/to/weights.safetensors" in str(error)
    else:
        pytest.skip("the Hugging Face Hub is reachable here, so the weights downloaded")


@pytest.fixture
def torch_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache, as ``TORCH_HOME`` sets it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


def test_torchvision_default_weights_load_from_the_torch_cache(torch_cache):
    weights = models.get_model_weights("shufflenet_v2_x0_5").DEFAULT
    state = models.get_model("shufflenet_v2_x0_5", weights=None).state_dict()
    torch_cache.mkdir(parents=True)
    torch.save(state, torch_cache / Path(weights.url).name)

    backbone = build_backbone("torchvision:shufflenet_v2_x0_5")

    assert torch.equal(backbone.module.state_dict()["conv5.0.weight"], state["conv5.0.weight"])
    assert backbone.data_config["input_size"] == (3, 224, 224)


def test_torchvision_unreachable_weights_show_the_alternatives(torch_cache):
    started = time.monotonic()
    try:
        build_backbone("torchvision:shufflenet_v2_x0_5@IMAGENET1K_V1")
    except WeightsError as error:
        assert time.monotonic() - started < QUICK_FAILURE_SECONDS
        assert "torchvision:shufflenet_v2_x0_5@none" in str(error)
        assert "torchvision:shufflenet_v2_x0_5@/path/to/weights.safetensors" in str(error)
    else:
        pytest.skip("download.pytorch.org is reachable here, so the weights downloaded")


def test_torchvision_unknown_weights_list_the_valid_ones():
    with pytest.raises(WeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        build_backbone("torchvision:resnet50@V3")


def test_torchvision_unsupported_family_lists_the_supported_ones():
    with pytest.raises(UnknownComponentError, match="supported families: .*resnet"):
        build_backbone("torchvision:vgg11@none")


def test_torchvision_unknown_model_names_close_matches():
    with pytest.raises(UnknownComponentError, match="did you mean torchvision:resnet18"):
        build_backbone("torchvision:resnet19@none")
