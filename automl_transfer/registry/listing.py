"""What ``automl-transfer plugins`` shows: each plugin, what it registers and observes, and what failed."""

from __future__ import annotations

from typing import Any

from automl_transfer.registry.manager import (
    components,
    loaded_plugins,
    plugin_problems,
    pm,
)
from automl_transfer.registry.observers import LIFECYCLE_HOOKS
from automl_transfer.registry.registry import KINDS


def plugin_listing() -> dict[str, list[dict[str, Any]]]:
    """Describe the loaded plugins, as ``automl-transfer plugins --json`` prints them.

    :returns: ``{"plugins": [{"name", "distribution", "version", "backbones", "heads",
        "datasets", "observes"}], "errors": [{"name", "error"}]}``; plugins are sorted by name
        and list the component names they actually provide (a name two plugins claim is in
        neither list, and in ``errors``) and the lifecycle hooks they implement;
        ``distribution`` and ``version`` are ``None`` for in-memory plugins. Each error is
        the one line that was warned.
    """
    loaded = loaded_plugins()
    provided: dict[str, dict[str, list[str]]] = {plugin.name: {kind: [] for kind in KINDS} for plugin in loaded}
    for kind in KINDS:
        for component in components(kind):
            provided[component.plugin][kind].append(component.name)
    listed = [
        {
            "name": plugin.name,
            "distribution": plugin.distribution,
            "version": plugin.version,
            "backbones": provided[plugin.name]["backbone"],
            "heads": provided[plugin.name]["head"],
            "datasets": provided[plugin.name]["dataset"],
            "observes": observed_hooks(plugin.name),
        }
        for plugin in loaded
    ]
    errors = [{"name": failure.name, "error": failure.error} for failure in plugin_problems()]
    return {"plugins": listed, "errors": errors}


def observed_hooks(name: str) -> list[str]:
    """Return the lifecycle hooks the plugin registered as ``name`` implements, in calling order."""
    plugin = pm.get_plugin(name)
    return [
        hook_name
        for hook_name in LIFECYCLE_HOOKS
        if any(impl.plugin is plugin for impl in getattr(pm.hook, hook_name).get_hookimpls())
    ]
