"""Presets and pretrained sources without a network: --weights none, --weights-dir, one error for all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.search.sources import offline_source

CLI = [sys.executable, "-m", "automl_transfer"]
DATASET = "digits:classes=0-1,per_class=6,size=16"
#: Two sources with pretrained weights on the Hugging Face Hub, never cached in these tests.
PRETRAINED_SPACE = """
source: [timm:test_resnet.r160_in1k, timm:test_efficientnet.r160_in1k]
lr: 0.01
head: linear
epochs: 1
batch_size: 8
image_size: 16
"""


def offline_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with the Hub switched off and an empty Hub and torch cache."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-cache"),
        "TORCH_HOME": str(tmp_path / "torch-cache"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def test_offline_source_rewrites_only_what_it_should(tmp_path: Path) -> None:
    (tmp_path / "resnet18.a1_in1k.safetensors").touch()
    (tmp_path / "resnet50.safetensors").touch()
    (tmp_path / "resnet50.a2_in1k.safetensors").touch()
    own = "timm:resnet18@/models/mine.safetensors"
    assert offline_source("timm:resnet18.a1_in1k", "none", None) == "timm:resnet18.a1_in1k@none"
    assert offline_source(own, "none", None) == "timm:resnet18@none"
    assert offline_source("timm:resnet18.a1_in1k", None, tmp_path) == f"timm:resnet18.a1_in1k@{tmp_path}/resnet18.a1_in1k.safetensors"
    assert offline_source("timm:resnet50@a2_in1k", None, tmp_path) == f"timm:resnet50@{tmp_path}/resnet50.a2_in1k.safetensors"
    assert offline_source("timm:resnet50@a1_in1k", None, tmp_path) == f"timm:resnet50@{tmp_path}/resnet50.safetensors"
    assert offline_source("timm:convnext_tiny", None, tmp_path) == "timm:convnext_tiny"
    assert offline_source(own, None, tmp_path) == own
    assert offline_source("timm:resnet50@none", None, tmp_path) == "timm:resnet50@none"
    assert SourceSpec.parse(offline_source("timm:resnet18.a1_in1k", None, tmp_path)).weights_file is not None


@pytest.mark.slow
def test_every_unreachable_source_is_named_in_one_error_then_weights_dir_runs_them(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(PRETRAINED_SPACE)
    search = ["search", "--dataset", DATASET, "--space", str(space), "--trials", "1", "--run-dir", str(tmp_path / "run")]

    refused = offline_cli(tmp_path, *search)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: the pretrained weights of 2 sources can be neither downloaded nor found in the cache: "
                           "timm:test_resnet.r160_in1k, timm:test_efficientnet.r160_in1k (first reason: ")
    assert line.endswith("--weights none (random weights), or --weights-dir DIR with "
                         "test_resnet.r160_in1k.safetensors, test_efficientnet.r160_in1k.safetensors in DIR")
    assert not (tmp_path / "run").exists()

    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "weights"
    weights.mkdir()
    for architecture in ("test_resnet", "test_efficientnet"):
        model = timm.create_model(architecture, pretrained=False)  # stands in for downloaded weights
        save_file(model.state_dict(), weights / f"{architecture}.r160_in1k.safetensors")
    done = offline_cli(tmp_path, *search, "--weights-dir", str(weights))
    assert done.returncode == 0, done.stderr
    source = json.loads((tmp_path / "run" / "best" / "model.json").read_text())["source"]
    assert source in {f"timm:{name}.r160_in1k@{weights}/{name}.r160_in1k.safetensors"
                      for name in ("test_resnet", "test_efficientnet")}


@pytest.mark.slow
def test_weights_none_runs_a_preset_offline(tmp_path: Path) -> None:
    # Two images to train on: the preset's trial takes at least 100 steps at 128 px whatever the data.
    result = offline_cli(
        tmp_path, "search", "--dataset", "synthetic:classes=2,per_class=2,size=16", "--space", "small",
        "--weights", "none", "--no-refit", "--trials", "1", "--run-dir", str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_complete"] == 1
    assert summary["best_params"]["source"].endswith("@none")
    assert summary["best_params"]["image_size"] == 128  # the preset's own settings, only the weights differ
    assert not any((tmp_path / "hf-cache").rglob("*.safetensors"))
