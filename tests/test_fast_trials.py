"""Fast trials: what frozen layers compute is computed once per fit, features once per search."""

from __future__ import annotations

import pytest
import timm
import torch
from test_training import coloured_images
from timm.models import group_parameters
from torch import nn

from automl_transfer.contract.components import Backbone
from automl_transfer.data.cache import FeatureStore
from automl_transfer.data.prepare import PreparedData
from automl_transfer.model.freezing import freeze_backbone
from automl_transfer.model.network import TransferModel
from automl_transfer.model.sources import BackboneCache
from automl_transfer.training.fit import TrialSettings, fit


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return PreparedData(["red", "green", "blue"], coloured_images(96, seed=0), coloured_images(45, seed=1), None, 0, "synthetic")


def model_of(name: str, freeze_depth: float, seed: int = 0) -> tuple[TransferModel, object]:
    torch.manual_seed(seed)
    module = timm.create_model(name, num_classes=0)
    groups = group_parameters(module, module.group_matcher())
    backbone = Backbone(module, module.num_features, {"mean": (0.5,) * 3, "std": (0.5,) * 3},
                        [groups[key] for key in sorted(groups)], name)
    head = nn.Linear(module.num_features, 3)
    model = TransferModel(backbone.module, head, (0.5,) * 3, (0.5,) * 3)
    return model, freeze_backbone(backbone, freeze_depth)


def settings(**changes) -> TrialSettings:
    values = dict(lr=1e-2, weight_decay=0.01, l2sp=0.0, epochs=3, batch_size=16, label_smoothing=0.1, augment="none",
                  seed=3)
    values.update(changes)
    return TrialSettings(**values)


@pytest.mark.parametrize("name, freeze_depth, reuse", [
    ("test_resnet", 0.5, "frozen front computed once"),
    ("test_efficientnet", 0.75, "frozen front computed once"),
    ("test_resnet", 1.0, "frozen front computed once"),
])
def test_the_same_seed_gives_the_same_metrics_with_and_without_reuse(data, name, freeze_depth, reuse):
    results = {}
    for reused in (True, False):
        model, frozen = model_of(name, freeze_depth)
        results[reused] = fit(model, frozen, data, settings(reuse_frozen=reused))
    assert results[True].frozen_reuse == reuse and results[False].frozen_reuse == "not reused: switched off"
    for cached, plain in zip(results[True].history, results[False].history):
        assert cached["accuracy"] == plain["accuracy"] and cached["macro_f1"] == plain["macro_f1"]
        assert cached["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-4)
        assert cached["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    assert results[True].best_epoch == results[False].best_epoch


def test_the_rest_trains_the_models_own_layers_and_frozen_ones_stay(data):
    model, frozen = model_of("test_resnet", 0.5)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fit(model, frozen, data, settings())
    after = model.state_dict()
    assert frozen.frozen_param_names
    assert all(torch.equal(after[f"backbone.{name}"], before[f"backbone.{name}"]) for name in frozen.frozen_param_names)
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["backbone.layer4.0.conv1.weight"], before["backbone.layer4.0.conv1.weight"])


def test_augmentation_or_an_untraceable_model_runs_the_whole_network(data):
    model, frozen = model_of("test_resnet", 0.5)
    assert fit(model, frozen, data, settings(augment="light", epochs=1)).frozen_reuse == (
        "not reused: augmented images differ every epoch"
    )
    model, frozen = model_of("test_vit", 0.5)
    assert fit(model, frozen, data, settings(epochs=1)).frozen_reuse.startswith("not reused: the model cannot be traced")


def test_features_of_a_frozen_backbone_are_stored_and_read_back_by_the_next_fit(data, tmp_path):
    store = FeatureStore(tmp_path, {"data": "synthetic", "source": "test_resnet"})
    first, frozen = model_of("test_resnet", 1.0)
    first_result = fit(first, frozen, data, settings(), feature_store=store)
    assert first_result.frozen_reuse == "features (cached)" and store.path.is_file()

    second, frozen = model_of("test_resnet", 1.0)
    calls = []
    second.backbone.register_forward_hook(lambda *args: calls.append(1))
    second_result = fit(second, frozen, data, settings(), feature_store=store)
    assert calls == []  # the backbone never ran: its features came from the store
    assert second_result.history == first_result.history


def test_a_search_builds_each_pretrained_source_once_and_hands_out_copies(tmp_path):
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), weights)
    cache = BackboneCache()
    first, second = cache.build(f"timm:test_resnet@{weights}"), cache.build(f"timm:test_resnet@{weights}")
    assert first.module is not second.module
    assert all(torch.equal(a, b) for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values()))
    assert len(cache._kept) == 1
    torch.manual_seed(0)
    random_one = cache.build("timm:test_resnet@none")
    torch.manual_seed(1)
    random_two = cache.build("timm:test_resnet@none")
    assert not torch.equal(random_one.module.conv1[0].weight, random_two.module.conv1[0].weight)
