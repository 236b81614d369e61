"""The trial settings are declared once: the parser, the defaults, the trial's fields and the README follow."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from automl_transfer.contract import trial_settings
from automl_transfer.contract.trial_settings import Bounds, Setting
from automl_transfer.errors import SearchSpaceError
from automl_transfer.space import SearchSpace, parse_yaml
from automl_transfer.training.params import TrialParams
from automl_transfer.training.settings import TrialSettings

MIXUP = Setting("mixup", "float", 0.0, "mixup strength, 0 to 1; `0` turns it off", Bounds(0.0, 1.0), trains=True)


@pytest.fixture
def with_mixup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table with one more setting, as a release that adds a search dimension would have it."""
    monkeypatch.setattr(trial_settings, "SETTINGS", (*trial_settings.SETTINGS, MIXUP))


def test_one_more_row_in_the_table_reaches_the_parser_the_defaults_and_the_readme_table(with_mixup) -> None:
    searched = parse_yaml("source: [timm:a]\nmixup: {low: 0.0, high: 0.4}\n", origin="space.yaml")
    params = searched.suggest(optuna.trial.FixedTrial({"source": "timm:a", "lr": 1e-3, "mixup": 0.25}))
    assert params["mixup"] == 0.25
    assert searched.to_dict()["mixup"] == {"low": 0.0, "high": 0.4, "log": False, "step": None}
    left_out = parse_yaml("source: [timm:a]\n", origin="space.yaml")
    assert left_out.suggest(optuna.trial.FixedTrial({"source": "timm:a", "lr": 1e-3}))["mixup"] == 0.0
    assert trial_settings.defaults()["mixup"] == 0.0
    with pytest.raises(SearchSpaceError, match=r"space.yaml: mixup: 2.0 must be at most 1"):
        parse_yaml("source: [timm:a]\nmixup: 2.0\n", origin="space.yaml")
    with pytest.raises(SearchSpaceError, match="a start point sets one of .*mixup"):
        parse_yaml("source: [timm:a]\nstart: [{mix: 0.1}]\n", origin="space.yaml")
    assert parse_yaml("source: [timm:a]\nstart: [{mixup: 0.1}]\n", origin="space.yaml").start_points == ({"mixup": 0.1},)
    assert "| `mixup` | mixup strength, 0 to 1; `0` turns it off | `0.0` |" in trial_settings.readme_table()


def test_without_the_row_the_key_is_unknown() -> None:
    with pytest.raises(SearchSpaceError, match="unknown key"):
        parse_yaml("source: [timm:a]\nmixup: 0.1\n", origin="space.yaml")


def test_the_trial_parameters_and_the_trainer_settings_have_the_table_fields() -> None:
    table = [setting.name for setting in trial_settings.trial_fields()]
    assert [field.name for field in dataclasses.fields(TrialParams)] == [*table, "head_params", "interpolation"]
    trained = [setting.name for setting in trial_settings.SETTINGS if setting.trains]
    assert [field.name for field in dataclasses.fields(TrialSettings)][: len(trained)] == trained
    assert {"lr", "epochs", "min_steps", "patience"} <= set(trained) and "source" not in trained


def test_a_trial_record_from_before_a_setting_existed_gets_its_absent_value() -> None:
    suggested = SearchSpace.from_dict({"source": "timm:a", "lr": 1e-3}).suggest(optuna.trial.FixedTrial({}))
    params = TrialParams.resolve(suggested, {"input_size": (3, 32, 32)})
    assert params.min_steps == 200 and params.patience == 5  # the space's defaults
    recorded = {key: value for key, value in params.to_dict().items() if key not in ("l1", "min_steps", "patience")}
    old = TrialParams.from_dict(recorded)  # made by a release before l1, min_steps and patience
    assert (old.l1, old.min_steps, old.patience) == (0.0, 0, 0)
    with pytest.raises(KeyError, match="lack lr"):
        TrialParams.from_dict({key: value for key, value in recorded.items() if key != "lr"})


def test_the_trainer_settings_are_the_trials_trained_values_with_the_fits_own() -> None:
    params = TrialParams.resolve(
        SearchSpace.from_dict({"source": "timm:a", "lr": 2e-3, "l1": 1e-4, "augment": "none"}).suggest(
            optuna.trial.FixedTrial({})
        ),
        {"input_size": (3, 32, 32)},
    )
    settings = TrialSettings(**params.training_values(), seed=4)
    assert (settings.lr, settings.l1, settings.augment, settings.min_steps, settings.seed) == (2e-3, 1e-4, "none", 200, 4)
    with pytest.raises(ValueError, match="augment must be one of"):
        TrialSettings(lr=1e-3, augment="sideways")
