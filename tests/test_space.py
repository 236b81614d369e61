"""Search spaces: presets, validation errors, sampling with real Optuna studies."""

import json
import warnings
from pathlib import Path

import optuna
import pytest

from automl_transfer.errors import PluginError, SearchSpaceError
from automl_transfer.plugin import hookimpl
from automl_transfer.space import SearchSpace, load_space, parse_yaml, preset_names

optuna.logging.set_verbosity(optuna.logging.WARNING)

SRC = "source: [timm:a]\n"
MLP_SPACE = "source: [timm:test_resnet@none, timm:test_vit@none]\nhead: [linear, mlp]\n"


def space_from(text: str, base_dir: Path | None = None) -> SearchSpace:
    return parse_yaml(text, origin="space.yaml", base_dir=base_dir)


def sample(space: SearchSpace, n_trials: int, sampler: optuna.samplers.BaseSampler) -> list[optuna.trial.FrozenTrial]:
    """Optimise a toy objective over ``space`` in memory and return the trials."""

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        bonus = params["head_params"].get("dropout", 0.0) + (params["head"] == "mlp")
        return params["lr"] * 100 + params["freeze_depth"] + bonus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
    return study.trials


class ExtrasPlugin:
    """Declares the ``extra`` settings these tests search; its regularizer is always off."""

    @hookimpl
    def register_regularizers(self, register):
        register("test-extras", lambda context: None, settings={"ema": 0.0, "tag": "", "layers": 1, "scale": 1.0})


@pytest.fixture
def extras_plugin(register_plugin):
    register_plugin(ExtrasPlugin(), "test-extras")


def test_an_extra_setting_no_plugin_declares_is_refused_with_the_declared_ones():
    with pytest.raises(SearchSpaceError) as error:
        space_from(SRC + "extra: {mixpu: 0.2}\n")
    message = str(error.value)
    assert "extra.mixpu" in message and "did you mean 'mixup'" in message
    assert "bss, cutmix, delta, mixup" in message


def test_the_built_in_extra_settings_parse_and_reach_the_trial():
    space = space_from(SRC + "extra: {mixup: [0.0, 0.2], cutmix: 1.0, delta: {low: 0.01, high: 1.0, log: true}, bss: 0.001}\n")
    params = space.suggest(optuna.trial.FixedTrial({"source": "timm:a", "lr": 0.001, "extra.mixup": 0.2, "extra.delta": 0.1}))
    assert params["extra"] == {"mixup": 0.2, "cutmix": 1.0, "delta": 0.1, "bss": 0.001}


def test_presets_are_shipped():
    assert {"default", "small", "demo", "lite"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name):
    space = load_space(name)
    assert space.sources and all(":" in source for source in space.sources)
    recorded = json.loads(json.dumps(space.to_dict()))
    again = SearchSpace.from_dict(recorded, origin="recorded")
    assert again.to_dict() == space.to_dict()
    assert again.fingerprint() == space.fingerprint()


def test_default_preset_names_pretrained_timm_tags():
    import timm

    pretrained = set(timm.list_pretrained())
    for source in load_space("default").sources + load_space("small").sources:
        plugin, _, model = source.partition(":")
        assert plugin == "timm" and model in pretrained, source


def test_demo_and_lite_presets_name_the_offline_imagenet_sources():
    assert load_space("demo").sources == ["lite:lite0"]
    assert load_space("lite").sources == ["lite:lite0", "lite:lite1", "lite:lite2"]


def test_demo_preset_is_the_space_the_demo_searches(tmp_path):
    from automl_transfer.demo.demo import SOURCE, write_space
    from automl_transfer.demo.settings import DemoSettings

    written = write_space(tmp_path / "demo-space.yaml", SOURCE, DemoSettings())
    assert load_space(written).to_dict() == load_space("demo").to_dict()


@pytest.mark.parametrize(
    "text, expected",
    [
        (SRC + "lrr: 0.1\n", ["lrr", "unknown key", "did you mean 'lr'", "valid keys are source"]),
        (SRC + "lr: {low: 0.1, high: 0.01}\n", ["lr", "low (0.1) is greater than high (0.01)"]),
        (SRC + "weight_decay: {low: 0.0, high: 0.1, log: true}\n", ["weight_decay", "log range needs low > 0"]),
        (SRC + "batch_size: []\n", ["batch_size", "empty list"]),
        ("source: []\n", ["source", "empty list"]),
        (SRC + "epochs: ten\n", ["epochs", "expected a whole number, got str 'ten'"]),
        (SRC + "batch_size: [32, 64.5]\n", ["batch_size[1]", "whole number"]),
        (SRC + "augment: 1\n", ["augment", "augmentation strength (none, light, strong)"]),
        (SRC + "augment: lite\n", ["augment", "did you mean 'light'"]),
        (SRC + "start: {lr: 0.1}\n", ["start", "expected a list of mappings"]),
        (SRC + "start: [{lrr: 0.1}]\n", ["start[0].lrr", "a start point sets one of"]),
        (SRC + "start: [{lr: -1}]\n", ["start[0].lr", "must be greater than 0"]),
        (SRC + "start: [{head: mlp}]\n", ["start[0].head", "'mlp' is not a head of this space"]),
        (SRC + "l1: -0.1\n", ["l1", "must be at least 0"]),
        (SRC + "patience: 1.5\n", ["patience", "whole number"]),
        (SRC + "image_size: 100000\n", ["image_size", "must be at most 2048"]),
        (SRC + "augment: {low: 0, high: 1}\n", ["augment", "cannot be a range"]),
        (SRC + "freeze_depth: 1.5\n", ["freeze_depth", "1.5 must be at most 1"]),
        (SRC + "lr: 0\n", ["lr", "must be greater than 0"]),
        (SRC + "label_smoothing: 1.0\n", ["label_smoothing", "must be less than 1"]),
        (SRC + "lr:\n", ["lr", "got nothing (null)"]),
        ("lr: 0.001\n", ["source", "missing"]),
        ("source: [resnet50]\n", ["source[0]", "'resnet50' is not of the form PLUGIN:MODEL[@WEIGHTS]"]),
        ("source: timm:resnet50@\n", ["source", "ends in '@' without weights"]),
        ("source: [timm:a, timm:a]\n", ["source", "lists the choice 'timm:a' twice"]),
        (SRC + "lr: {low: 0.001, hihg: 0.1}\n", ["lr", "unknown range key 'hihg'", "did you mean 'high'"]),
        (SRC + "lr: {low: 0.001}\n", ["lr", "needs both low and high"]),
        (SRC + "lr: {low: 0.001, high: 0.1, log: true, step: 0.001}\n", ["lr", "log and step cannot be combined"]),
        (SRC + "freeze_depth: {low: 0.0, high: 1.0, step: 0.3}\n", ["freeze_depth", "not a multiple of step"]),
        (SRC + "lr: {low: 0.001, high: 0.1, log: yes please}\n", ["lr.log", "true or false"]),
        (SRC + "head: mpl\n", ["head", "unknown head 'mpl'", "did you mean 'mlp'"]),
        (SRC + "head: {mlp: {widht: 3}}\n", ["head.mlp.widht", "has no parameter 'widht'", "it takes hidden, dropout"]),
        (SRC + "head: {linear: {dropout: 0.1}}\n", ["head.linear.dropout", "takes no parameters"]),
        (SRC + "head: {mlp: {hidden: []}}\n", ["head.mlp.hidden", "empty list"]),
        (SRC + "head: {mlp: {dropout: {low: 0.5, high: 0.1}}}\n", ["head.mlp.dropout", "greater than high"]),
        (SRC + "head: []\n", ["head", "empty list"]),
        (SRC + "extra: [1, 2]\n", ["extra", "expected a mapping"]),
        (SRC + "extra: {ema: {decay: 0.9}}\n", ["extra.ema", "unknown range key 'decay'"]),
        ("- timm:a\n", ["expected a mapping of keys", "got list"]),
        ("", ["empty", "source"]),
        (SRC + "lr: 0.1\nlr: 0.2\n", ["line 3", "duplicate key 'lr'"]),
        ("source: [timm:a\nlr: 0.1\n", ["YAML syntax error at line", "space.yaml"]),
        (SRC + "  lr: 0.1\n", ["YAML syntax error at line 2"]),
    ],
)
def test_invalid_space_names_key_and_problem(text, expected):
    with pytest.raises(SearchSpaceError) as error:
        space_from(text)
    message = str(error.value)
    assert message.startswith("space.yaml: ")
    for part in expected:
        assert part in message


def test_head_with_invalid_registered_space_blames_its_plugin(register_plugin):
    class BadHeads:
        @hookimpl
        def register_heads(self, register):
            register("wide", lambda in_features, num_classes, width=8: None, space={"width": []})

    register_plugin(BadHeads(), "bad-heads")
    with pytest.raises(PluginError, match="plugin 'bad-heads' registers head 'wide' with an invalid space.*empty list"):
        space_from("source: [timm:a]\nhead: wide\n")


def test_load_space_errors_say_what_exists(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"search space 'smal' \(did you mean 'small'\?\): presets are default"):
        load_space("smal")
    missing = tmp_path / "mine.yaml"
    with pytest.raises(SearchSpaceError, match=rf"search space file {missing} does not exist.*default, demo, lite, small"):
        load_space(missing)
    with pytest.raises(SearchSpaceError, match="is not a file"):
        load_space(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("source: [timm:a]\nepochs: {low: 5, high: 2}\n")
    with pytest.raises(SearchSpaceError, match=rf"^{broken}: epochs: low \(5\) is greater than high \(2\)$"):
        load_space(str(broken))


def test_fixed_trial_gives_concrete_params(extras_plugin):
    space = space_from(
        "source: [timm:test_resnet@none, timm:test_vit@none]\n"
        "freeze_depth: {low: 0, high: 1}\n"
        "lr: {low: 1e-4, high: 1e-2, log: true}\n"
        "l2sp: [0, 0.01]\n"
        "head: {linear: {}, mlp: {hidden: [128, 256]}}\n"
        "epochs: {low: 2, high: 6, step: 2}\n"
        "batch_size: 16\n"
        "augment: [none, light, true]\n"
        "extra: {ema: [0.99, 0.999], tag: blue}\n"
    )
    trial = optuna.trial.FixedTrial(
        {
            "source": "timm:test_vit@none",
            "freeze_depth": 0.25,
            "lr": 0.003,
            "l2sp": 0.01,
            "head": "mlp",
            "head.mlp.hidden": 256,
            "head.mlp.dropout": 0.2,
            "epochs": 4,
            "augment": "light",
            "extra.ema": 0.999,
        }
    )
    assert space.suggest(trial) == {
        "source": "timm:test_vit@none",
        "freeze_depth": 0.0,  # random weights are never frozen: not even sampled
        "lr": 0.003,
        "weight_decay": 0.05,
        "l2sp": 0.01,
        "l1": 0.0,
        "head": "mlp",
        "head_params": {"hidden": 256, "dropout": 0.2},
        "epochs": 4,
        "batch_size": 16,
        "image_size": None,
        "label_smoothing": 0.0,
        "augment": "light",
        "warmup_epochs": 1.0,
        "min_steps": 200,
        "patience": 5,
        "extra": {"ema": 0.999, "tag": "blue"},
    }


def test_defaults_fill_every_omitted_key():
    params = space_from("source: timm:test_resnet@none\n").suggest(optuna.trial.FixedTrial({"lr": 0.001}))
    assert params == {
        "source": "timm:test_resnet@none",
        "freeze_depth": 0.0,
        "lr": 0.001,
        "weight_decay": 0.05,
        "l2sp": 0.0,
        "l1": 0.0,
        "head": "linear",
        "head_params": {},
        "epochs": 10,
        "batch_size": 64,
        "image_size": None,
        "label_smoothing": 0.0,
        "augment": "light",
        "warmup_epochs": 1.0,
        "min_steps": 200,
        "patience": 5,
        "extra": {},
    }


def test_only_searched_values_become_optuna_parameters():
    space = space_from("source: timm:a\nhead: {mlp: {hidden: 384}}\nlr: 0.01\nepochs: {low: 1, high: 3}\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = space.suggest(trial)
    assert set(trial.params) == {"epochs", "head.mlp.dropout"}
    assert isinstance(trial.distributions["epochs"], optuna.distributions.IntDistribution)
    assert params["head"] == "mlp" and params["head_params"]["hidden"] == 384
    assert 0.0 <= params["head_params"]["dropout"] <= 0.5


def test_range_types_follow_the_key_and_the_registered_head_space(extras_plugin):
    space = space_from(
        "source: timm:a\nfreeze_depth: {low: 0, high: 1}\nhead: {mlp: {dropout: {low: 0, high: 1}}}\n"
        "extra: {layers: {low: 1, high: 4}, scale: {low: 1, high: 4.0}}\n"
    )
    trial = optuna.create_study().ask()
    space.suggest(trial)
    kinds = {name: type(dist).__name__ for name, dist in trial.distributions.items()}
    assert kinds == {
        "freeze_depth": "FloatDistribution",
        "lr": "FloatDistribution",
        "head.mlp.hidden": "CategoricalDistribution",
        "head.mlp.dropout": "FloatDistribution",
        "extra.layers": "IntDistribution",
        "extra.scale": "FloatDistribution",
    }


def test_head_parameters_appear_only_for_the_chosen_head():
    trials = sample(space_from(MLP_SPACE), 30, optuna.samplers.RandomSampler(seed=1))
    chosen = {trial.params["head"] for trial in trials}
    assert chosen == {"linear", "mlp"}
    for trial in trials:
        head_params = {name for name in trial.params if name.startswith("head.")}
        expected = {"head.mlp.hidden", "head.mlp.dropout"} if trial.params["head"] == "mlp" else set()
        assert head_params == expected


@pytest.mark.parametrize("name", ["default", "demo"])
def test_multivariate_tpe_samples_reproducibly(name):
    space = load_space(name)
    first = sample(space, 20, optuna.samplers.TPESampler(seed=0, multivariate=True))
    second = sample(space, 20, optuna.samplers.TPESampler(seed=0, multivariate=True))
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in first)
    assert [trial.params for trial in first] == [trial.params for trial in second]
    assert len({json.dumps(trial.params, sort_keys=True) for trial in first}) == 20


def test_numbers_in_exponent_notation_are_numbers():
    space = space_from("source: timm:a\nlr: {low: 1e-5, high: 3E-3, log: true}\nweight_decay: 5e-2\n")
    assert space.to_dict()["lr"] == {"low": 1e-5, "high": 3e-3, "log": True, "step": None}
    assert space.to_dict()["weight_decay"] == 0.05


def test_relative_weight_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    folder = tmp_path / "spaces"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        "source:\n  - timm:test_resnet@weights/source.safetensors\n  - timm:test_vit@./v.pt\n"
        "  - timm:resnet18@a1_in1k\n  - timm:resnet18@none\n  - timm:resnet18@/abs/w.safetensors\n"
    )
    monkeypatch.chdir(tmp_path)
    assert load_space("spaces/mine.yaml").sources == [
        f"timm:test_resnet@{folder / 'weights/source.safetensors'}",
        f"timm:test_vit@{folder / 'v.pt'}",
        "timm:resnet18@a1_in1k",
        "timm:resnet18@none",
        "timm:resnet18@/abs/w.safetensors",
    ]


def test_fingerprint_is_stable_and_tracks_content():
    text = "source: [timm:a, timm:b]\nlr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
    assert space_from(text).fingerprint() == space_from(text).fingerprint()
    reordered = "lr: {log: true, high: 0.01, low: 0.0001}\nsource: [timm:a, timm:b]\nhead: linear\n"
    assert space_from(reordered).fingerprint() == space_from(text).fingerprint()
    assert space_from(text + "epochs: 11\n").fingerprint() != space_from(text).fingerprint()
    assert space_from(text.replace("timm:b", "timm:c")).fingerprint() != space_from(text).fingerprint()


def test_error_message_is_one_plain_line():
    with pytest.raises(SearchSpaceError) as error:
        space_from("source: [timm:a]\nlr: [0.001, 0]\n")
    assert str(error.value) == "space.yaml: lr[1]: 0 must be greater than 0"


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    (tmp_path / "small").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_space("small").origin == "preset 'small'"
    (tmp_path / "small.yaml").write_text("source: timm:resnet18@none\n")
    assert load_space("small.yaml").sources == ["timm:resnet18@none"]


def test_pretrained_sources_sample_freeze_depth_random_ones_never_freeze():
    space = space_from("source: [timm:test_resnet, timm:test_resnet@none]\nfreeze_depth: {low: 0.0, high: 1.0}\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        params = space.suggest(trial)
        if params["source"].endswith("@none"):
            assert params["freeze_depth"] == 0.0 and "freeze_depth" not in trial.params
        else:
            assert "freeze_depth" in trial.params
        study.tell(trial, 0.0)


def test_start_trials_run_each_recipe_for_every_source_within_the_space():
    space = space_from(
        "source: [timm:test_resnet, timm:test_vit, timm:test_resnet@none]\n"
        "freeze_depth: [0.0, 0.5, 0.75]\n"
        "lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "weight_decay: [0.01, 0.05]\n"
        "head: [linear, mlp]\n"
        "start: [{freeze_depth: 0.0, lr: 3.0e-3}, {freeze_depth: 1.0, lr: 0.1, head: mlp}]\n"
    )
    trials = space.start_trials()
    assert [(trial["source"], trial.get("freeze_depth")) for trial in trials] == [
        ("timm:test_resnet", 0.0), ("timm:test_vit", 0.0), ("timm:test_resnet@none", None),
        ("timm:test_resnet", 0.75), ("timm:test_vit", 0.75),  # 1.0 is outside the space: the nearest choice
    ]
    assert trials[0]["lr"] == 3.0e-3 and trials[3]["lr"] == 1.0e-2  # clamped to the range
    assert trials[0]["weight_decay"] == 0.01 and trials[0]["head"] == "linear" and trials[3]["head"] == "mlp"
    assert trials[3]["head.mlp.hidden"] == 256 and trials[3]["head.mlp.dropout"] == 0.25
    assert space.start_trials(sources=["timm:test_vit", "timm:test_resnet", "timm:test_resnet@none"])[0]["source"] == "timm:test_vit"
    for params in trials:  # every start trial is a valid point of the space
        space.suggest(optuna.trial.FixedTrial(params))


def test_a_space_without_start_gets_the_default_portfolio_and_an_empty_list_turns_it_off():
    assert space_from("source: timm:test_resnet\n").start_points
    assert space_from("source: timm:test_resnet\nstart: []\n").start_trials() == []
