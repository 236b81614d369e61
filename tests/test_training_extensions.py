"""Regularizers and batch transforms as plugins: the built-ins' outcomes, and a third party's reaching training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from test_training import coloured_images, settings, tiny_backbone, tiny_model

from automl_transfer.data.prepare import PreparedData
from automl_transfer.errors import PluginError
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.plugin import hookimpl
from automl_transfer.training.fit import fit
from automl_transfer_plugins.regularizer_terms import BatchSpectralShrinkage
from automl_transfer_plugins.regularizers import trainable_blocks

REFERENCE = json.loads((Path(__file__).parent / "data" / "regularizers-before-hooks.json").read_text())


@pytest.fixture(autouse=True)
def one_thread():
    """Keep CPU runs bit-for-bit reproducible (and polite on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return PreparedData(
        class_names=["red", "green", "blue"],
        train=coloured_images(256, seed=0),
        val=coloured_images(90, seed=1),
        test=None,
        n_skipped=0,
        fingerprint="synthetic",
    )


def small_data() -> PreparedData:
    return PreparedData(["red", "green", "blue"], coloured_images(48, seed=2), coloured_images(24, seed=3), None, 0, "small")


@pytest.mark.parametrize("case", sorted(REFERENCE["results"]))
def test_l2sp_and_l1_as_plugins_give_the_numbers_of_the_hard_wired_code(data, case):
    backbone = tiny_backbone()
    model = tiny_model(backbone)

    result = fit(model, freeze_backbone(backbone, 0.25), data, settings(**REFERENCE["settings"][case]))

    expected = REFERENCE["results"][case]
    assert [epoch["train_loss"] for epoch in result.history] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert [epoch["val_loss"] for epoch in result.history] == pytest.approx(expected["val_loss"], rel=1e-5)
    weights = float(sum(parameter.detach().abs().sum() for parameter in model.parameters()))
    assert weights == pytest.approx(expected["weights_abs_sum"], rel=1e-5)


def test_the_reference_cases_differ_so_the_comparison_can_fail():
    losses = {case: tuple(result["train_loss"]) for case, result in REFERENCE["results"].items()}
    assert len(set(losses.values())) == len(losses)


def block_distance(model, source, data) -> float:
    """Mean squared distance between the model's and the source's features on the validation images,
    both with batch statistics (as DELTA compares them while training)."""
    images = (data.val.images.float() / 255 - 0.5) / 0.5
    model.train()
    source.train()
    with torch.no_grad():
        return float((model.backbone(images) - source(images)).pow(2).mean())


def test_delta_keeps_the_features_near_the_source_network(data):
    distances = {}
    for strength in (0.0, 10.0):
        backbone = tiny_backbone()
        source = tiny_backbone().module
        model = tiny_model(backbone)
        result = fit(model, freeze_backbone(backbone, 0.0), data, settings(extra={"delta": strength}))
        distances[strength] = block_distance(model, source, data)
        assert ("regularizer delta" in result.frozen_reuse) == bool(strength)
        assert result.metrics["accuracy"] > 0.8
    assert distances[10.0] < 0.5 * distances[0.0]


def test_delta_switches_off_frozen_prefix_reuse_and_leaves_no_hook_behind(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)

    result = fit(model, freeze_backbone(backbone, 0.5), small_data(), settings(extra={"delta": 1.0}, epochs=1))

    assert result.frozen_reuse == "not reused: regularizer delta reads every layer's output"
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def test_delta_compares_the_trainable_blocks_only():
    groups = tiny_backbone().param_groups
    assert trainable_blocks(groups, 0) == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]  # the stem has no one module
    assert trainable_blocks(groups, 3) == ["layer3.0", "layer4.0"]
    assert trainable_blocks(groups, len(groups)) == []
    assert trainable_blocks([["blocks.3.1.conv.weight", "blocks.3.1.bn.bias"], ["stem.weight", "norm.bias"]], 0) == [
        "blocks.3.1"
    ]


def test_bss_shrinks_the_smallest_singular_values_of_the_batchs_features_and_leaves_the_largest():
    torch.manual_seed(0)
    images = torch.randn(16, 8)
    layer, head = nn.Linear(8, 8), nn.Linear(8, 3)
    bss = BatchSpectralShrinkage(head, strength=1.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    before = torch.linalg.svdvals(layer(images)).detach()
    for _ in range(30):
        logits = head(layer(images))
        optimizer.zero_grad()
        bss.loss(logits, None).backward()
        optimizer.step()
    after = torch.linalg.svdvals(layer(images)).detach()
    bss.close()

    assert after[-1] < 0.5 * before[-1]
    assert after[0] > 0.9 * before[0]
    assert not head._forward_pre_hooks


def test_bss_trains_a_model_that_still_learns(data):
    backbone = tiny_backbone()
    result = fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(extra={"bss": 0.1}, epochs=1))
    assert result.metrics["accuracy"] > 0.8 and result.frozen_reuse == "not reused: nothing is frozen"


@pytest.mark.parametrize("transform", ["mixup", "cutmix"])
def test_mixing_transforms_train_reproducibly_and_switch_off_feature_reuse(transform):
    results = []
    for _ in range(2):
        backbone = tiny_backbone()
        model = tiny_model(backbone)
        results.append(fit(model, freeze_backbone(backbone, 1.0), small_data(), settings(extra={transform: 1.0}, epochs=2)))
    plain_backbone = tiny_backbone()
    plain = fit(tiny_model(plain_backbone), freeze_backbone(plain_backbone, 1.0), small_data(), settings(epochs=2))

    assert results[0].frozen_reuse == f"not reused: batch transform {transform} changes the images every step"
    assert plain.frozen_reuse == "frozen front computed once"
    assert results[0].history == results[1].history
    assert results[0].history[-1]["train_loss"] != pytest.approx(plain.history[-1]["train_loss"], rel=1e-3)


class Recorder:
    """A third party's regularizer and batch transform, recording what reached them."""

    def __init__(self):
        self.values: list[dict] = []
        self.batches = 0
        self.losses = 0

    @hookimpl
    def register_regularizers(self, register):
        register("logit-size", self.build_regularizer, settings={"logit_size": 0.0})

    @hookimpl
    def register_batch_transforms(self, register):
        register("count", self.build_transform, settings={"count_batches": False})

    def build_regularizer(self, context):
        self.values.append(dict(context.values))
        if not context.values["logit_size"]:
            return None
        recorder = self

        class LogitSize:
            def loss(self, logits, targets):
                recorder.losses += 1
                return context.values["logit_size"] * logits.pow(2).mean()

        return LogitSize()

    def build_transform(self, context):
        if not context.values["count_batches"]:
            return None

        def count(images, labels):
            self.batches += 1
            return images, labels

        count.changes_images = False
        return count


def test_a_third_partys_settings_reach_it_and_its_terms_run_every_step(register_plugin):
    recorder = register_plugin(Recorder(), "recorder")
    backbone = tiny_backbone()

    result = fit(
        tiny_model(backbone),
        freeze_backbone(backbone, 1.0),
        small_data(),
        settings(extra={"logit_size": 0.5, "count_batches": True}, epochs=1, min_steps=0, batch_size=16),
    )

    assert recorder.values == [{"logit_size": 0.5}]
    assert recorder.batches == recorder.losses == 3
    assert result.frozen_reuse == "frozen front computed once"  # a transform that keeps the images keeps the reuse


def test_a_third_partys_settings_default_to_off(register_plugin):
    recorder = register_plugin(Recorder(), "recorder")
    backbone = tiny_backbone()

    fit(tiny_model(backbone), freeze_backbone(backbone, 1.0), small_data(), settings(epochs=1, min_steps=0))

    assert recorder.values == [{"logit_size": 0.0}] and recorder.batches == recorder.losses == 0


def test_a_builder_that_raises_is_reported_with_its_plugin(register_plugin):
    class Broken:
        @hookimpl
        def register_regularizers(self, register):
            register("broken", lambda context: 1 / 0, settings={"broken": 0.0})

    register_plugin(Broken(), "broken-plugin")
    backbone = tiny_backbone()

    with pytest.raises(PluginError, match="regularizer 'broken' of plugin 'broken-plugin' failed to set up: ZeroDivisionError"):
        fit(tiny_model(backbone), freeze_backbone(backbone, 1.0), small_data(), settings(epochs=1, min_steps=0))
