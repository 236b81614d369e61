"""Plugin loading, registries and the ``plugins`` command, with real and in-memory plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from automl_transfer import registry as plugins
from automl_transfer.commands import cli
from automl_transfer.contract.components import Backbone, Component
from automl_transfer.errors import PluginError, UnknownComponentError
from automl_transfer.plugin import hookimpl
from automl_transfer.registry.registry import Registry

CONSOLE_SCRIPT = Path(sys.executable).with_name("automl-transfer")

FAKEZOO_MODULE = '''
"""A third-party plugin: one backbone, one head, one dataset."""
from torch import nn

from automl_transfer.contract.components import Backbone, ImageDataset
from automl_transfer.plugin import hookimpl


def build_backbone(model, weights):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    data_config = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                   "interpolation": "bilinear", "crop_pct": 1.0}
    groups = [["0.weight", "0.bias"]]
    return Backbone(module=module, num_features=4, data_config=data_config, param_groups=groups,
                    architecture=model)


def load_dataset(location):
    return ImageDataset(class_names=["a", "b"], train=[], origin=f"fakedata:{location}")


@hookimpl
def register_backbones(register):
    register("fakezoo", build_backbone, description="a 4-feature conv net")


@hookimpl
def register_heads(register):
    register("fakehead", lambda in_features, num_classes: nn.Linear(in_features, num_classes))


@hookimpl
def register_datasets(register):
    register("fakedata", load_dataset)
'''

BROKEN_MODULE = '''
import automl_transfer_no_such_dependency
'''

RAISING_MODULE = '''
from automl_transfer.plugin import hookimpl


@hookimpl
def register_datasets(register):
    register("halfway", lambda location: None)
    raise RuntimeError("dataset index unreachable")
'''


def _write_project(root: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write a minimal setuptools project with ``modules`` and entry points in our group."""
    root.mkdir(parents=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    points = "\n".join(f'{plugin} = "{target}"' for plugin, target in entry_points.items())
    modules_list = ", ".join(f'"{module}"' for module in modules)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "{version}"

            [tool.setuptools]
            py-modules = [{modules_list}]

            [project.entry-points.automl_transfer]
            """
        )
        + points
        + "\n"
    )
    return root


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """A directory with two real plugin distributions installed by pip.

    ``automl-transfer-fakezoo 1.2.3`` provides a working plugin ``fakezoo``;
    ``automl-transfer-broken 0.0.1`` provides ``broken`` (fails to import) and ``raising``
    (its ``register_datasets`` raises).
    """
    root = tmp_path_factory.mktemp("third_party")
    fakezoo = _write_project(
        root / "fakezoo",
        "automl-transfer-fakezoo",
        "1.2.3",
        {"fakezoo_plugin": FAKEZOO_MODULE},
        {"fakezoo": "fakezoo_plugin"},
    )
    broken = _write_project(
        root / "broken",
        "automl-transfer-broken",
        "0.0.1",
        {"broken_plugin": BROKEN_MODULE, "raising_plugin": RAISING_MODULE},
        {"broken": "broken_plugin", "raising": "raising_plugin"},
    )
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(fakezoo), str(broken)],
        check=True,
        capture_output=True,
    )
    return site


def _run_cli(args: list[str], site: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the installed ``automl-transfer`` console script with ``site`` on ``PYTHONPATH``."""
    environment = {name: value for name, value in os.environ.items() if name != plugins.DISABLE_ENV}
    environment.update(PYTHONPATH=str(site), **env)
    command = [str(CONSOLE_SCRIPT), *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def listing_run(third_party_site, tmp_path_factory) -> subprocess.CompletedProcess:
    """``automl-transfer plugins --json`` run once with the third-party plugins installed."""
    return _run_cli(["plugins", "--json"], third_party_site, tmp_path_factory.mktemp("cwd"))


def test_cli_discovers_an_installed_third_party_plugin(listing_run):
    assert listing_run.returncode == 0, listing_run.stderr
    listing = json.loads(listing_run.stdout)
    assert set(listing) == {"plugins", "errors"}
    by_name = {plugin["name"]: plugin for plugin in listing["plugins"]}
    assert by_name["fakezoo"] == {
        "name": "fakezoo",
        "distribution": "automl-transfer-fakezoo",
        "version": "1.2.3",
        "backbones": ["fakezoo"],
        "heads": ["fakehead"],
        "datasets": ["fakedata"],
        "layouts": [],
        "regularizers": [],
        "batch_transforms": [],
        "offline_sources": [],
        "observes": [],
    }


def test_cli_survives_a_broken_plugin_and_a_raising_hook(listing_run):
    assert listing_run.returncode == 0
    listing = json.loads(listing_run.stdout)
    errors = {error["name"]: error["error"] for error in listing["errors"]}
    assert "automl-transfer-broken 0.0.1" in errors["broken"]
    assert "automl_transfer_no_such_dependency" in errors["broken"]
    assert "register_datasets raised RuntimeError: dataset index unreachable" in errors["raising"]
    by_name = {plugin["name"]: plugin for plugin in listing["plugins"]}
    assert by_name["raising"]["datasets"] == [], "registrations made before the hook raised must be dropped"
    assert "fakezoo" in by_name
    warning_lines = listing_run.stderr.splitlines()
    for name, error_text in (("broken", "ModuleNotFoundError"), ("raising", "RuntimeError")):
        lines = [line for line in warning_lines if f"plugin {name!r}" in line]
        assert len(lines) == 1, listing_run.stderr
        assert "automl-transfer-broken 0.0.1" in lines[0] and error_text in lines[0]


def test_cli_disables_plugins_by_flag_and_by_environment(third_party_site, tmp_path):
    run = _run_cli(
        ["--disable-plugins", "broken,fakezoo", "plugins", "--json"],
        third_party_site,
        tmp_path,
        AUTOML_TRANSFER_DISABLE_PLUGINS="raising",
    )
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    names = {plugin["name"] for plugin in listing["plugins"]}
    assert not names & {"fakezoo", "broken", "raising"}
    assert not [error for error in listing["errors"] if error["name"] in {"broken", "raising"}]
    assert "broken" not in run.stderr and "raising" not in run.stderr, "disabled plugins must not even be imported"


def test_cli_table_lists_plugins_and_errors(third_party_site, tmp_path):
    run = _run_cli(["plugins"], third_party_site, tmp_path, COLUMNS="200")
    assert run.returncode == 0, run.stderr
    assert "automl-transfer-fakezoo 1.2.3" in run.stdout
    assert "backbones: fakezoo" in run.stdout
    assert "Plugin errors" in run.stdout and "automl_transfer_no_such_dependency" in run.stdout


@pytest.fixture
def third_party_on_path(third_party_site, monkeypatch, fresh_plugins):
    """The third-party plugins importable in this process, forgotten (with their modules) afterwards."""
    monkeypatch.syspath_prepend(str(third_party_site))
    yield third_party_site
    for module in ("fakezoo_plugin", "raising_plugin", "broken_plugin"):
        sys.modules.pop(module, None)


def test_get_component_returns_the_third_party_backbone(third_party_on_path):
    with pytest.warns(plugins.PluginWarning) as warned:
        plugins.load_plugins()
    messages = [str(warning.message) for warning in warned]
    assert any("'broken'" in message for message in messages) and any("'raising'" in message for message in messages)
    component = plugins.get_component("backbone", "fakezoo")
    assert component.plugin == "fakezoo"
    backbone = component.build("tiny", "none")
    assert isinstance(backbone, Backbone)
    assert backbone.module(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    head = plugins.get_component("head", "fakehead").build(4, 3)
    assert head(torch.rand(2, 4)).shape == (2, 3)
    distributions = {
        plugins.pm.get_name(plugin): dist.metadata["Name"] for plugin, dist in plugins.pm.list_plugin_distributions()
    }
    assert distributions["fakezoo"] == "automl-transfer-fakezoo"


def test_disabled_plugins_are_not_imported(third_party_on_path, monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_ENV, "broken, raising")
    plugins.load_plugins(disabled=["fakezoo"])
    assert not {"fakezoo_plugin", "broken_plugin", "raising_plugin"} & set(sys.modules)
    names = {plugin["name"] for plugin in plugins.plugin_listing()["plugins"]}
    assert not names & {"fakezoo", "broken", "raising"}
    assert {"broken", "fakezoo", "raising"} <= set(plugins.disabled_plugins())
    with pytest.raises(UnknownComponentError):
        plugins.get_component("backbone", "fakezoo")


def test_disabling_after_loading_drops_the_plugin(register_plugin):
    register_plugin(_Provider, "provider")
    assert plugins.get_component("backbone", "tiny_backbone").plugin == "provider"
    try:
        plugins.load_plugins(disabled=["provider"])
        with pytest.raises(UnknownComponentError):
            plugins.get_component("backbone", "tiny_backbone")
    finally:
        plugins.reset()


def _tiny_backbone(model, weights):
    module = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    config = {
        "input_size": (3, 8, 8), "mean": (0.0,) * 3, "std": (1.0,) * 3, "interpolation": "bilinear", "crop_pct": 1.0
    }
    return Backbone(module, 3, config, [["1.weight", "1.bias"]], model)


def _tiny_head(in_features, num_classes, hidden=4):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class _Provider:
    """An in-memory plugin registering one component of each kind."""

    @hookimpl
    def register_backbones(register):
        register("tiny_backbone", _tiny_backbone, description="flatten and project")

    @hookimpl
    def register_heads(register):
        register("tiny_head", _tiny_head, space={"hidden": [4, 8]})

    @hookimpl
    def register_datasets(register):
        register("tiny_data", lambda location: location)


class _Rival:
    """Claims ``tiny_backbone`` again and adds a name of its own."""

    @hookimpl
    def register_backbones(register):
        register("tiny_backbone", _tiny_backbone)
        register("rival_backbone", _tiny_backbone)


def test_in_memory_plugin_components_are_listed(register_plugin):
    register_plugin(_Provider, "provider")
    head = plugins.get_component("head", "tiny_head")
    assert (head.kind, head.plugin, head.space) == ("head", "provider", {"hidden": [4, 8]})
    assert plugins.get_component("dataset", "tiny_data").build("here") == "here"
    assert "tiny_backbone" in [component.name for component in plugins.components("backbone")]
    entry = next(plugin for plugin in plugins.plugin_listing()["plugins"] if plugin["name"] == "provider")
    assert entry == {
        "name": "provider",
        "distribution": None,
        "version": None,
        "backbones": ["tiny_backbone"],
        "heads": ["tiny_head"],
        "datasets": ["tiny_data"],
        "layouts": [],
        "regularizers": [],
        "batch_transforms": [],
        "offline_sources": [],
        "observes": [],
    }


def test_unregistered_plugin_components_disappear(register_plugin):
    register_plugin(_Provider, "provider")
    plugins.unregister_plugin("provider")
    with pytest.raises(UnknownComponentError):
        plugins.get_component("backbone", "tiny_backbone")
    assert "provider" not in {plugin["name"] for plugin in plugins.plugin_listing()["plugins"]}


def test_a_clashing_name_is_refused_in_both_plugins_whatever_the_order(register_plugin):
    register_plugin(_Provider, "provider")
    with pytest.warns(plugins.PluginWarning, match="tiny_backbone"):
        register_plugin(_Rival, "rival")
    with pytest.raises(PluginError, match="'provider' and 'rival'.*--disable-plugins"):
        plugins.get_component("backbone", "tiny_backbone")
    assert plugins.get_component("backbone", "rival_backbone").plugin == "rival"
    assert plugins.get_component("head", "tiny_head").plugin == "provider"
    [error] = [error for error in plugins.plugin_listing()["errors"] if "tiny_backbone" in error["error"]]
    assert "'provider'" in error["error"] and "'rival'" in error["error"]
    listed = {plugin["name"]: plugin["backbones"] for plugin in plugins.plugin_listing()["plugins"]}
    assert listed["provider"] == [] and listed["rival"] == ["rival_backbone"]


def test_the_same_clash_is_refused_when_the_plugins_load_the_other_way_round(register_plugin):
    register_plugin(_Rival, "rival")
    with pytest.warns(plugins.PluginWarning, match="tiny_backbone"):
        register_plugin(_Provider, "provider")
    with pytest.raises(PluginError, match="'rival' and 'provider'"):
        plugins.get_component("backbone", "tiny_backbone")


def test_removing_one_of_two_clashing_plugins_gives_the_name_to_the_other(register_plugin):
    register_plugin(_Provider, "provider")
    with pytest.warns(plugins.PluginWarning):
        register_plugin(_Rival, "rival")
    plugins.unregister_plugin("provider")
    assert plugins.get_component("backbone", "tiny_backbone").plugin == "rival"
    assert not [error for error in plugins.plugin_listing()["errors"] if error["name"] == "rival"]


def test_registry_refuses_a_duplicate_in_both_naming_both_plugins():
    registry = Registry("dataset")
    registry.add(Component("dataset", "pets", print, "first"))
    with pytest.raises(PluginError, match="'first' and 'second'"):
        registry.add(Component("dataset", "pets", print, "second"))
    with pytest.raises(PluginError, match="'first' and 'second'.*--disable-plugins"):
        registry.get("pets")
    assert list(registry) == []


def test_unknown_name_lists_close_matches_and_the_listing_command(register_plugin):
    register_plugin(_Provider, "provider")
    with pytest.raises(UnknownComponentError) as raised:
        plugins.get_component("backbone", "tiny_backbon")
    message = str(raised.value)
    assert "'tiny_backbone'" in message and "run `automl-transfer plugins` to list all" in message


def test_unknown_name_in_an_empty_registry_says_none_is_registered():
    with pytest.raises(UnknownComponentError, match="no loaded plugin registers a head"):
        Registry("head").get("linear")


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="backbone, head, dataset"):
        plugins.components("optimizer")


class _HalfRaising:
    @hookimpl
    def register_backbones(register):
        register("kept_backbone", _tiny_backbone)

    @hookimpl
    def register_heads(register):
        register("dropped_head", nn.Linear)
        raise RuntimeError("head table corrupt")


def test_raising_register_hook_drops_only_that_hooks_registrations(register_plugin):
    with pytest.warns(plugins.PluginWarning, match="'half'.*register_heads raised RuntimeError: head table corrupt"):
        register_plugin(_HalfRaising, "half")
    assert plugins.get_component("backbone", "kept_backbone").plugin == "half"
    with pytest.raises(UnknownComponentError):
        plugins.get_component("head", "dropped_head")
    assert [error["name"] for error in plugins.plugin_listing()["errors"]].count("half") == 1


class _UnknownHook:
    @hookimpl
    def register_optimizers(register):
        register("sgd", None)


def test_implementation_of_a_nonexistent_hook_is_a_plugin_error(register_plugin):
    with pytest.warns(plugins.PluginWarning, match="register_optimizers"):
        register_plugin(_UnknownHook, "unknown-hook")
    listing = plugins.plugin_listing()
    assert "unknown-hook" not in {plugin["name"] for plugin in listing["plugins"]}
    assert [error["name"] for error in listing["errors"]].count("unknown-hook") == 1
    assert plugins.pm.get_plugin("unknown-hook") is None


class _BadSignature:
    @hookimpl
    def register_heads(register, extra):
        register("never", nn.Linear)


def test_hook_with_arguments_missing_from_the_spec_is_a_plugin_error(register_plugin):
    with pytest.warns(plugins.PluginWarning, match="not a valid plugin.*extra"):
        register_plugin(_BadSignature, "bad-signature")
    assert plugins.pm.get_plugin("bad-signature") is None


class _BadName:
    @hookimpl
    def register_datasets(register):
        register("csv:extra", lambda location: None)


def test_a_name_with_a_colon_is_refused(register_plugin):
    with pytest.warns(plugins.PluginWarning, match="'csv:extra' is not usable"):
        register_plugin(_BadName, "bad-name")


def test_registering_a_taken_plugin_name_raises(register_plugin):
    register_plugin(_Provider, "provider")
    with pytest.raises(ValueError, match="already registered"):
        plugins.register_plugin(_Rival, "provider")


class _Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def trial_end(self, trial, state, value, reason):
        self.calls.append((trial, state, value, reason))


class _FailingObserver:
    @hookimpl
    def trial_end(trial):
        raise RuntimeError("tracker offline")


def test_failing_observer_is_one_warning_per_search_and_others_are_still_called(register_plugin):
    recorder = register_plugin(_Recorder(), "recorder")
    register_plugin(_FailingObserver, "failing")
    trial = SimpleNamespace(number=1, params={}, user_attrs={})
    plugins.call_observers("search_start", run_dir=None, study=None, settings={"quiet": True})
    with pytest.warns(plugins.PluginWarning) as warned:
        for _ in range(3):
            plugins.call_observers("trial_end", trial=trial, state="COMPLETE", value=0.5, reason=None)
    failing = [str(warning.message) for warning in warned if "'failing'" in str(warning.message)]
    assert len(failing) == 1, failing
    assert "'failing' (no distribution) failed in trial_end: RuntimeError: tracker offline" in failing[0]
    assert f"raised at {__file__}:" in failing[0]
    assert recorder.calls == [(trial, "COMPLETE", 0.5, None)] * 3
    assert plugins.observed_hooks("recorder") == ["trial_end"]


def test_call_observers_rejects_a_registration_hook():
    with pytest.raises(ValueError, match="not a lifecycle hook"):
        plugins.call_observers("register_heads", register=print)


def test_plugins_command_prints_one_json_object(register_plugin, capsys):
    register_plugin(_Provider, "provider")
    assert cli.main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "provider" in {plugin["name"] for plugin in listing["plugins"]}


def test_cli_turns_user_errors_into_one_line_and_exit_2(monkeypatch, capsys):
    def fail():
        raise UnknownComponentError("unknown head 'lineer'\n(run `automl-transfer plugins` to list all)")

    monkeypatch.setattr(plugins, "plugin_listing", fail)
    assert cli.main(["plugins"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if not line.startswith("warning: ")] == [
        "error: unknown head 'lineer' (run `automl-transfer plugins` to list all)"
    ]


def test_cli_exits_130_on_ctrl_c(monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(plugins, "plugin_listing", interrupt)
    assert cli.main(["plugins"]) == 130


def test_the_import_paths_of_version_0_1_still_work_and_say_where_names_moved():
    import automl_transfer.components as old_components
    import automl_transfer.datasets as old_datasets
    import automl_transfer.hookspecs as old_hookspecs
    import automl_transfer.plugins as old_plugins
    from automl_transfer import plugin, plugin_testing

    with pytest.warns(DeprecationWarning, match="automl_transfer.hookspecs.hookimpl moved: import it from automl_transfer.plugin"):
        assert old_hookspecs.hookimpl is plugin.hookimpl
    with pytest.warns(DeprecationWarning):
        assert (old_components.Backbone, old_components.ImageDataset) == (plugin.Backbone, plugin.ImageDataset)
    with pytest.warns(DeprecationWarning):
        assert old_datasets.parse_options is plugin.parse_options
    with pytest.warns(DeprecationWarning):
        assert old_plugins.register_plugin is plugin_testing.register_plugin
    with pytest.raises(AttributeError):
        old_components.Nothing  # noqa: B018


@pytest.mark.parametrize("module", ["automl_transfer.plugin", "automl_transfer.plugin_testing"])
def test_the_plugin_api_imports_no_torch_timm_or_optuna(module):
    code = f"import sys, {module}; print(sorted({{'torch', 'timm', 'optuna'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_the_plugin_api_is_split_by_audience_and_the_moved_names_still_work_with_a_warning():
    from automl_transfer import plugin, plugin_observers, plugin_testing, registry
    from automl_transfer.reporting import leaderboard
    from automl_transfer.search import counting

    authors = set(plugin.__all__)
    assert {"hookimpl", "Backbone", "ImageDataset", "parse_options", "DatasetError"} <= authors
    assert not authors & (set(plugin_testing.__all__) | set(plugin_observers.__all__))
    assert set(plugin_testing.__all__) == {"register_plugin", "unregister_plugin"} and "get_component" in authors
    assert set(plugin_observers.__all__) == {"leaderboard", "wide_console", "trial_counts"}
    moved = {"register_plugin": registry.register_plugin,
             "unregister_plugin": registry.unregister_plugin, "leaderboard": leaderboard.leaderboard,
             "wide_console": leaderboard.wide_console, "trial_counts": counting.trial_counts}
    for name, value in moved.items():
        audience = "plugin_testing" if hasattr(plugin_testing, name) else "plugin_observers"
        with pytest.warns(DeprecationWarning, match=f"automl_transfer.plugin.{name} moved: import it from "
                                                    f"automl_transfer.{audience}"):
            assert getattr(plugin, name) is value
    with pytest.raises(AttributeError):
        plugin.Nothing  # noqa: B018


def test_tracing_shows_every_hook_call_on_stderr():
    environment = {**os.environ, "AUTOML_TRANSFER_TRACE_PLUGINS": "1"}
    result = subprocess.run([sys.executable, "-m", "automl_transfer", "plugins", "--json"], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "register_heads [hook]" in result.stderr and "finish register_heads" in result.stderr
    assert json.loads(result.stdout)["plugins"]  # the listing itself is untouched


def test_loading_the_built_in_plugins_imports_no_torch():
    """A search forks its image decoder before torch loads, and `plugins --json` stays fast: no plugin may import it."""
    code = "import sys; from automl_transfer import registry; registry.load_plugins(); print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "False"
