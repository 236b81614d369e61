"""Fine-tuning a real tiny timm backbone on synthetic images: outcomes of fit, retry and evaluate."""

from __future__ import annotations

import math

import optuna
import pytest
import timm
import torch
from timm.models import group_parameters
from torch import nn

from automl_transfer.contract.components import Backbone
from automl_transfer.data.prepare import LabelledTensors, PreparedData
from automl_transfer.model.freezing import FrozenLayers, freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.training import trainer as training
from automl_transfer.training.evaluation import evaluate
from automl_transfer.training.failures import NonFiniteLossError, OutOfMemoryTrialError
from automl_transfer.training.fit import TrialSettings, fit, fit_with_oom_retry

CPU = torch.device("cpu")
COLOURS = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=torch.float32)
METRIC_KEYS = {"epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "train_images"}


@pytest.fixture(autouse=True)
def one_thread():
    """Share the machine politely and keep CPU runs bit-for-bit reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def coloured_images(count: int, seed: int, size: int = 32) -> LabelledTensors:
    """Noisy images whose dominant colour is their label (3 classes): easy to learn."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COLOURS), (count,), generator=generator)
    pixels = COLOURS[labels].view(count, 3, 1, 1) + 50 * torch.randn(count, 3, size, size, generator=generator)
    return LabelledTensors(images=pixels.clamp(0, 255).to(torch.uint8), labels=labels)


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


def tiny_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    module = timm.create_model("test_resnet", num_classes=0)
    groups = group_parameters(module, module.group_matcher())
    return Backbone(
        module=module,
        num_features=module.num_features,
        data_config={"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"},
        param_groups=[groups[key] for key in sorted(groups)],
        architecture="test_resnet",
    )


def tiny_model(backbone: Backbone, head: nn.Module | None = None) -> TransferModel:
    head = head if head is not None else nn.Linear(backbone.num_features, 3)
    return TransferModel(backbone.module, head, backbone.data_config["mean"], backbone.data_config["std"])


def settings(**changes) -> TrialSettings:
    values = dict(lr=3e-3, weight_decay=0.01, l2sp=0.0, epochs=2, batch_size=32, label_smoothing=0.1, augment=False)
    values.update(changes)
    return TrialSettings(**values)


def test_learns_a_learnable_task(data):
    backbone = tiny_backbone()
    result = fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(epochs=3, augment=True))

    assert result.metrics["accuracy"] > 0.9  # chance is 1/3
    assert result.metrics["macro_f1"] > 0.9
    assert len(result.history) == 3 and result.metrics is result.history[result.best_epoch - 1]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert not result.model.training


def test_frozen_layers_do_not_change(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    frozen = freeze_backbone(backbone, 0.6)
    frozen_names = {name for group in backbone.param_groups[:3] for name in group}
    before = {name: value.clone() for name, value in model.backbone.state_dict().items()}

    fit(model, frozen, data, settings())

    after = model.backbone.state_dict()
    parameters = dict(model.backbone.named_parameters())
    for name in frozen_names:
        assert parameters[name].grad is None
        assert torch.equal(after[name], before[name]), name
    # the running statistics of frozen BatchNorm layers are untouched too
    frozen_norms = [name for name in frozen_names if name.endswith(".bias") and f"{name[:-5]}.running_mean" in after]
    assert frozen_norms
    for name in frozen_norms:
        for buffer in ("running_mean", "running_var"):
            key = f"{name[:-5]}.{buffer}"
            assert torch.equal(after[key], before[key]), key
    # while the layers after them did train
    trained = [name for name in after if name.startswith("layer4.") and name.endswith("weight")]
    assert any(not torch.equal(after[name], before[name]) for name in trained)


def test_optimizer_skips_frozen_and_decays_only_matrices(data, monkeypatch):
    optimizers = []

    def recording_optimizer(*args, **kwargs):
        optimizers.append(build_optimizer(*args, **kwargs))
        return optimizers[-1]

    build_optimizer = training.build_optimizer
    monkeypatch.setattr(training, "build_optimizer", recording_optimizer)
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    frozen = freeze_backbone(backbone, 0.4)
    fit(model, frozen, data, settings(epochs=1))

    groups = {group["weight_decay"]: group["params"] for group in optimizers[0].param_groups}
    optimised = [id(parameter) for group in groups.values() for parameter in group]
    trainable = [id(parameter) for parameter in model.parameters() if parameter.requires_grad]
    assert sorted(optimised) == sorted(trainable)
    assert len(trainable) < len(list(model.parameters()))
    assert all(parameter.ndim >= 2 for parameter in groups[0.01])
    assert all(parameter.ndim == 1 for parameter in groups[0.0])
    state = optimizers[0].state
    assert all(parameter in state for parameter in model.parameters() if parameter.requires_grad)
    assert not any(parameter in state for parameter in model.parameters() if not parameter.requires_grad)


def test_l2sp_keeps_the_backbone_near_its_start(data):
    distances = {}
    for strength in (0.0, 10.0):
        backbone = tiny_backbone()
        start = [parameter.detach().clone() for parameter in backbone.module.parameters()]
        fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(l2sp=strength, weight_decay=0.0))
        distances[strength] = sum(
            float((parameter.detach() - initial).pow(2).sum())
            for parameter, initial in zip(backbone.module.parameters(), start)
        )
    assert distances[10.0] < 0.5 * distances[0.0]


def test_learning_rate_warms_up_then_decays(data, monkeypatch):
    seen = []

    def recording_optimizer(*args, **kwargs):
        optimizer = build_optimizer(*args, **kwargs)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
        return optimizer

    build_optimizer = training.build_optimizer
    monkeypatch.setattr(training, "build_optimizer", recording_optimizer)
    backbone = tiny_backbone()
    fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(lr=0.01, epochs=3, warmup_epochs=1))

    steps_per_epoch = 256 // 32
    assert len(seen) == 3 * steps_per_epoch
    warmup, decay = seen[: steps_per_epoch + 1], seen[steps_per_epoch:]
    assert all(earlier < later for earlier, later in zip(warmup, warmup[1:]))
    assert seen[steps_per_epoch] == pytest.approx(0.01)
    assert all(earlier > later for earlier, later in zip(decay, decay[1:]))
    assert 0 < seen[-1] < 0.001


def test_on_epoch_sees_every_epoch_with_the_documented_keys(data):
    calls = []
    backbone = tiny_backbone()
    frozen = freeze_backbone(backbone, 0.0)
    fit(tiny_model(backbone), frozen, data, settings(epochs=3), lambda *call: calls.append(call))

    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    for epoch, metrics in calls:
        assert set(metrics) == METRIC_KEYS and metrics["epoch"] == epoch
        assert all(math.isfinite(value) for value in metrics.values())
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1


def test_pruning_stops_training_at_once(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    calls = []

    def prune(epoch, metrics):
        calls.append({name: value.clone() for name, value in model.state_dict().items()})
        raise optuna.TrialPruned(f"pruned at {epoch}")

    with pytest.raises(optuna.TrialPruned):
        fit(model, freeze_backbone(backbone, 0.0), data, settings(epochs=3), prune)

    assert len(calls) == 1
    assert all(torch.equal(value, calls[0][name]) for name, value in model.state_dict().items())


def test_a_huge_learning_rate_raises_non_finite_loss(data):
    backbone = tiny_backbone()
    calls = []
    with pytest.raises(NonFiniteLossError, match="lower learning rate"):
        fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(lr=1e10, epochs=3), calls.append)
    assert calls == []  # stopped during the first epoch


def test_an_infinite_output_stops_the_trial_at_that_step(data):
    class InfiniteHead(nn.Linear):
        def forward(self, features):
            self.calls = getattr(self, "calls", 0) + 1
            return super().forward(features) * (math.inf if self.calls == 3 else 1.0)

    backbone = tiny_backbone()
    head = InfiniteHead(backbone.num_features, 3)
    with pytest.raises(NonFiniteLossError, match="by step 3 of epoch 1"):
        fit(tiny_model(backbone, head), freeze_backbone(backbone, 0.0), data, settings())
    assert head.calls == 3


class OutOfMemoryAbove(nn.Linear):
    """A head that runs out of 'memory' on training batches larger than ``limit`` after ``after`` steps."""

    def __init__(self, in_features: int, limit: int, after: int = 0):
        super().__init__(in_features, 3)
        self.limit, self.after, self.batches = limit, after, []

    def forward(self, features):
        if self.training:
            self.batches.append(len(features))
            if len(features) > self.limit and len(self.batches) > self.after:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(features)


def test_out_of_memory_halves_the_batch_and_restarts_from_the_initial_weights(data):
    backbone = tiny_backbone()
    head = OutOfMemoryAbove(backbone.num_features, limit=16, after=2)
    epochs = []
    result = fit_with_oom_retry(
        tiny_model(backbone, head),
        freeze_backbone(backbone, 0.0),
        data,
        settings(batch_size=64),
        lambda epoch, metrics: epochs.append(epoch),
    )

    assert result.batch_size == 16
    sizes = list(dict.fromkeys(head.batches))
    assert sizes == [64, 32, 16]
    assert epochs == [1, 2]

    # the retry started from the initial weights: same outcome as training at 16 from the start
    reference_backbone = tiny_backbone()
    reference = fit(
        tiny_model(reference_backbone, OutOfMemoryAbove(backbone.num_features, limit=1000)),
        freeze_backbone(reference_backbone, 0.0),
        data,
        settings(batch_size=16),
    )
    assert result.metrics == reference.metrics


def test_out_of_memory_gives_up_at_the_minimum_batch_size(data):
    backbone = tiny_backbone()
    head = OutOfMemoryAbove(backbone.num_features, limit=4)
    with pytest.raises(OutOfMemoryTrialError, match="48, 24, 12, 8"):
        fit_with_oom_retry(
            tiny_model(backbone, head),
            freeze_backbone(backbone, 0.0),
            data,
            settings(batch_size=48, min_batch_size=8),
        )
    # Each attempt cuts a pass into near-equal batches of at most the size tried.
    first_seen = list(dict.fromkeys(head.batches))
    assert len(first_seen) == 4
    assert all(size / 2 < seen <= size for seen, size in zip(first_seen, [48, 24, 12, 8]))


def test_same_seed_gives_identical_metrics_on_cpu(data):
    def run(seed):
        backbone = tiny_backbone(seed=0)
        head = nn.Sequential(nn.Dropout(0.3), nn.Linear(backbone.num_features, 3))
        frozen = freeze_backbone(backbone, 0.2)
        return fit(tiny_model(backbone, head), frozen, data, settings(augment=True, seed=seed)).history

    first = run(seed=3)
    assert run(seed=3) == first
    assert run(seed=4) != first


def test_fit_restores_the_callers_random_state(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, freeze_backbone(backbone, 0.0), data, settings(epochs=1, augment=True))
    assert torch.equal(torch.rand(3), expected)


def test_evaluate_does_not_depend_on_the_batch_size(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    fit(model, freeze_backbone(backbone, 0.0), data, settings(epochs=1))

    scores = [evaluate(model, data.val, CPU, batch_size) for batch_size in (1, 7, 32, 1000)]
    for score in scores[1:]:
        assert score["accuracy"] == scores[0]["accuracy"]
        assert score["macro_f1"] == scores[0]["macro_f1"]
        assert score["val_loss"] == pytest.approx(scores[0]["val_loss"], rel=1e-5)
    assert set(scores[0]) == {"accuracy", "macro_f1", "val_loss"}


def test_evaluate_reproduces_the_last_epoch_metrics(data):
    backbone = tiny_backbone()
    result = fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), data, settings(epochs=1, label_smoothing=0.3))
    score = evaluate(result.model, data.val, CPU, 64)
    assert score["accuracy"] == result.metrics["accuracy"]
    assert score["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-5)


def test_settings_reject_an_empty_run():
    with pytest.raises(ValueError, match="epochs"):
        settings(epochs=0)


class RecordingBackbone(nn.Module):
    """Pools images to features and records, while training, which images each step saw.

    Image ``i`` of :func:`numbered_images` has the value ``i`` in its first pixel, and the
    model's mean/std are 0/1, so the backbone reads the image's number back from its input.
    """

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.steps: list[list[int]] = []

    def forward(self, images):
        if self.training:
            self.steps.append((images[:, 0, 0, 0] * 255).round().long().tolist())
        return images.mean(dim=(2, 3)) * self.scale


def numbered_images(count: int) -> LabelledTensors:
    images = torch.zeros(count, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)
    return LabelledTensors(images=images, labels=torch.arange(count) % 3)


def recording_model() -> tuple[TransferModel, FrozenLayers]:
    backbone = Backbone(RecordingBackbone(), 3, {"mean": (0.0,) * 3, "std": (1.0,) * 3}, [["scale"]], "recording")
    model = TransferModel(backbone.module, nn.Linear(3, 3), (0.0,) * 3, (1.0,) * 3)
    return model, freeze_backbone(backbone, 0.0)


def test_no_image_is_dropped_from_an_epoch_and_no_batch_is_a_lone_image():
    data = PreparedData(["a", "b", "c"], numbered_images(41), numbered_images(6), None, 0, "numbered")
    model, frozen = recording_model()
    fit(model, frozen, data, settings(epochs=2, batch_size=8))
    steps = model.backbone.steps
    assert len(steps) == 2 * 6  # ceil(41 / 8) steps an epoch
    for epoch in (steps[:6], steps[6:]):
        assert sorted(number for step in epoch for number in step) == list(range(41))
        assert {len(step) for step in epoch} <= {6, 7}  # near-equal batches, none above 8
    data_of_17 = PreparedData(["a", "b", "c"], numbered_images(17), numbered_images(6), None, 0, "numbered")
    model, frozen = recording_model()
    fit(model, frozen, data_of_17, settings(epochs=1, batch_size=16))
    assert sorted(len(step) for step in model.backbone.steps) == [8, 9]  # not 16 + a lone image


def test_a_small_split_makes_several_passes_an_epoch_to_reach_min_steps():
    data = PreparedData(["a", "b", "c"], numbered_images(10), numbered_images(6), None, 0, "numbered")
    model, frozen = recording_model()
    calls = []
    fit(model, frozen, data, settings(epochs=2, batch_size=32, min_steps=10), lambda *call: calls.append(call))
    steps = model.backbone.steps
    assert len(steps) == 10 and all(sorted(step) == list(range(10)) for step in steps)
    assert [metrics["train_images"] for _, metrics in calls] == [50, 50]


def test_early_stopping_ends_the_fit_and_keeps_the_best_epochs_weights(data):
    backbone = tiny_backbone()
    model = tiny_model(backbone)
    states = []

    def remember(epoch, metrics):
        states.append({name: value.clone() for name, value in model.state_dict().items()})

    result = fit(model, freeze_backbone(backbone, 0.0), data, settings(lr=0.05, epochs=12, patience=2), remember)

    best = result.best_epoch
    accuracies = [metrics["accuracy"] for metrics in result.history]
    assert len(result.history) == best + 2 < 12  # stopped two epochs after the best one
    assert accuracies[best - 1] == max(accuracies) and result.metrics is result.history[best - 1]
    assert all(torch.equal(value, states[best - 1][name]) for name, value in model.state_dict().items())
    reloaded = evaluate(model, data.val, CPU, batch_size=17)
    assert reloaded["accuracy"] == result.metrics["accuracy"]
    assert reloaded["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-6)


def test_without_a_validation_split_every_epoch_trains_and_the_last_is_kept(data):
    backbone = tiny_backbone()
    no_val = PreparedData(data.class_names, data.train, None, None, 0, "synthetic")
    result = fit(tiny_model(backbone), freeze_backbone(backbone, 0.0), no_val, settings(epochs=3, patience=1))
    assert len(result.history) == 3 and result.best_epoch == 3
    assert "accuracy" not in result.metrics and math.isfinite(result.metrics["train_loss"])


def test_l1_pushes_weights_toward_zero(data):
    sizes = {}
    for strength in (0.0, 0.05):
        backbone = tiny_backbone()
        model = tiny_model(backbone)
        fit(model, freeze_backbone(backbone, 0.0), data, settings(l1=strength, weight_decay=0.0, epochs=1))
        sizes[strength] = sum(float(parameter.detach().abs().sum()) for parameter in model.parameters() if parameter.ndim > 1)
    assert sizes[0.05] < 0.8 * sizes[0.0]


def test_a_split_that_nearly_reaches_min_steps_is_not_trained_twice():
    """96 steps in 3 epochs against min_steps 100: one pass an epoch, not two (which doubled a trial's cost)."""
    data = PreparedData(["a", "b", "c"], numbered_images(63), numbered_images(6), None, 0, "numbered")
    model, frozen = recording_model()
    calls = []
    fit(model, frozen, data, settings(epochs=3, batch_size=2, min_steps=100), lambda *call: calls.append(call))
    assert [metrics["train_images"] for _, metrics in calls] == [63, 63, 63]
    assert len(model.backbone.steps) == 3 * 32
