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
        "datasets", "layouts", "regularizers", "batch_transforms", "offline_sources", "observes"}],
        "errors": [{"name", "error"}]}``;
        plugins are sorted by name and list the component names they actually provide (a
        name two plugins claim is in neither list, and in ``errors``), the weights layouts
        they register, the sources whose pretrained weights are on this machine (as their
        backbone builders say) and the lifecycle hooks they implement; ``distribution`` and
        ``version`` are ``None`` for in-memory plugins. Each error is the one line that was
        warned.
    """
    loaded = loaded_plugins()
    provided: dict[str, dict[str, list[str]]] = {plugin.name: {kind: [] for kind in KINDS} for plugin in loaded}
    for kind in KINDS:
        for component in components(kind):
            provided[component.plugin][kind].append(component.name)
    offline: dict[str, list[str]] = {}
    errors = [{"name": failure.name, "error": failure.error} for failure in plugin_problems()]
    for component in components("backbone"):
        if component.offline is not None:
            try:
                offline.setdefault(component.plugin, []).extend(component.offline())
            except Exception as error:  # a plugin's bug costs its own listing line, never the command
                errors.append({"name": component.plugin, "error": f"offline() of backbone {component.name!r} raised {error!r}"})
    listed = [
        {
            "name": plugin.name,
            "distribution": plugin.distribution,
            "version": plugin.version,
            "backbones": provided[plugin.name]["backbone"],
            "heads": provided[plugin.name]["head"],
            "datasets": provided[plugin.name]["dataset"],
            "layouts": provided[plugin.name]["layout"],
            "regularizers": provided[plugin.name]["regularizer"],
            "batch_transforms": provided[plugin.name]["batch_transform"],
            "offline_sources": offline.get(plugin.name, []),
            "observes": observed_hooks(plugin.name),
        }
        for plugin in loaded
    ]
    return {"plugins": listed, "errors": errors}


def observed_hooks(name: str) -> list[str]:
    """Return the lifecycle hooks the plugin registered as ``name`` implements, in calling order."""
    plugin = pm.get_plugin(name)
    return [
        hook_name
        for hook_name in LIFECYCLE_HOOKS
        if any(impl.plugin is plugin for impl in getattr(pm.hook, hook_name).get_hookimpls())
    ]
