"""The example plugin package: installed with pip, found through its entry point, used by a real search."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from search_processes import open_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "automl-transfer-example-plugin"
SPACE = """\
source: tinycnn:small@none
head: cosine
freeze_depth: [0.0, 0.5]
lr: {low: 3.0e-3, high: 3.0e-2, log: true}
epochs: 2
batch_size: 16
augment: false
"""


def _automl_transfer(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process that sees the packages installed in ``site``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("AUTOML_TRANSFER_DISABLE_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from automl_transfer.commands.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """Install a copy of the example package (not its dependencies) into a throwaway directory, once."""
    site = tmp_path_factory.mktemp("example-site")
    source = tmp_path_factory.mktemp("example-source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        check=True,
        timeout=300,
    )
    return site


@pytest.mark.slow
def test_installed_example_plugin_is_listed_with_its_components(example_site, tmp_path):
    listed = _automl_transfer(["plugins", "--json"], example_site, tmp_path)

    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    example = next(plugin for plugin in listing["plugins"] if plugin["name"] == "example")
    assert example["distribution"] == "automl-transfer-example-plugin"
    assert (example["backbones"], example["heads"], example["datasets"]) == (["tinycnn"], ["cosine"], ["stripes"])
    assert example["layouts"] == ["tinycnn-v0"]
    assert (example["regularizers"], example["batch_transforms"]) == (["confidence-penalty"], ["grey"])
    assert example["observes"] == ["search_start", "epoch_end", "search_end"]
    assert not [error for error in listing["errors"] if error["name"] == "example"]


@pytest.mark.slow
def test_search_with_the_example_backbone_head_dataset_and_observer(example_site, tmp_path):
    (tmp_path / "stripes.yaml").write_text(SPACE)
    run_dir = tmp_path / "run"

    searched = _automl_transfer(
        ["search", "--dataset", "stripes:per_class=12,test_per_class=2", "--space", "stripes.yaml", "--trials", "3",
         "--pruner", "none", "--device", "cpu", "--run-dir", str(run_dir), "--quiet"],
        example_site,
        tmp_path,
    )

    assert searched.returncode == 0, searched.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_complete"] == 3
    assert summary["best_params"]["source"] == "tinycnn:small@none"
    assert 0.05 <= summary["best_params"]["head_params"]["temperature"] <= 0.5
    best = json.loads((run_dir / "best" / "model.json").read_text())
    assert (best["head"], best["architecture"], best["class_names"]) == (
        "cosine", "small", ["horizontal", "vertical", "diagonal", "antidiagonal"]
    )
    with (run_dir / "epochs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["trial"], row["epoch"]) for row in rows] == [(str(t), str(e)) for t in range(3) for e in (1, 2)]
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in rows)

    image = tmp_path / "vertical.png"
    Image.new("RGB", (32, 32)).save(image)
    predicted = _automl_transfer(["predict", str(run_dir), str(image)], example_site, tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    path, label, score = predicted.stdout.strip().split("\t")
    assert path == str(image) and label in best["class_names"] and 0.0 <= float(score) <= 1.0


@pytest.mark.slow
def test_example_plugin_can_be_disabled(example_site, tmp_path):
    listed = _automl_transfer(["--disable-plugins", "example", "plugins", "--json"], example_site, tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert "example" not in {plugin["name"] for plugin in json.loads(listed.stdout)["plugins"]}


def _example_module(site: Path):
    """Import the installed example module from ``site`` (for its TinyCNN and stripes)."""
    sys.path.insert(0, str(site))
    try:
        import automl_transfer_example
    finally:
        sys.path.remove(str(site))
    return automl_transfer_example


@pytest.mark.slow
def test_a_search_uses_the_example_plugins_layout_regularizer_and_batch_transform(example_site, tmp_path):
    """From outside the core: an old checkpoint through ``tinycnn-v0``, trained with ``grey`` and
    ``confidence-penalty``, whose settings reach the plugin from ``extra`` and change the model."""
    import numpy as np
    import torch

    example = _example_module(example_site)
    torch.manual_seed(0)
    current = example.TinyCNN((16, 32, 48, 64)).state_dict()
    old_names = {
        name.replace(f"stages.{stage}.{layer}.", f"{('conv', 'bn')[int(layer)]}{int(stage) + 1}."): tensor
        for name, tensor in current.items()
        for stage, layer in [name.split(".")[1:3]]
    }
    assert "conv1.weight" in old_names and "bn4.running_var" in old_names
    torch.save(old_names, tmp_path / "old-tinycnn.pth")
    rng = np.random.default_rng(5)
    images = []
    for index, angle in enumerate(example.STRIPE_ANGLES.values()):
        images.append(tmp_path / f"stripes-{index}.png")
        example.draw_stripes(angle, 32, rng).save(images[-1])

    top_scores = {}
    for penalty in (0.0, 2.0):
        (tmp_path / "space.yaml").write_text(
            "source: tinycnn:small@old-tinycnn.pth\nhead: {cosine: {temperature: 0.1}}\nfreeze_depth: 1.0\nlr: 3.0e-2\nepochs: 2\nbatch_size: 16\n"
            f"augment: false\nextra: {{confidence_penalty: {penalty}, grey_share: 0.5}}\n"
        )
        run_dir = tmp_path / f"run-{penalty}"
        searched = _automl_transfer(
            ["search", "--dataset", "stripes:per_class=12,test_per_class=2", "--space", "space.yaml", "--trials", "1",
             "--device", "cpu", "--run-dir", str(run_dir), "--quiet", "--no-refit"],
            example_site,
            tmp_path,
        )
        assert searched.returncode == 0, searched.stderr
        trial = open_study(run_dir).trials[0]
        assert trial.user_attrs["params"]["extra"] == {"confidence_penalty": penalty, "grey_share": 0.5}
        assert trial.user_attrs["frozen_reuse"] == "not reused: batch transform grey changes the images every step"
        from safetensors.torch import load_file

        saved = load_file(run_dir / "best" / "model.safetensors")
        for name, tensor in current.items():  # frozen at depth 1.0: the old checkpoint's values, under today's names
            assert torch.equal(saved[f"backbone.{name}"], tensor), name
        predicted = _automl_transfer(["predict", str(run_dir), *map(str, images), "--json"], example_site, tmp_path)
        assert predicted.returncode == 0, predicted.stderr
        top_scores[penalty] = np.mean([json.loads(line)["score"] for line in predicted.stdout.splitlines()])

    assert top_scores[2.0] < top_scores[0.0] - 0.05  # the penalty made the predictions less confident (0.38 vs 0.51)
