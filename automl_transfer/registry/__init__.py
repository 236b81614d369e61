"""Plugins: loading them, looking up what they register, calling the observers.

The functions here are the ones the rest of the core uses; see
:mod:`automl_transfer.registry.manager` for how plugins are found and checked.
"""

from automl_transfer.registry.extensions import extra_settings
from automl_transfer.registry.listing import observed_hooks, plugin_listing
from automl_transfer.registry.manager import (
    DISABLE_ENV,
    PluginWarning,
    components,
    disabled_plugins,
    get_component,
    load_plugins,
    pm,
    register_plugin,
    reset,
    unregister_plugin,
)
from automl_transfer.registry.observers import LIFECYCLE_HOOKS, call_observers

__all__ = [
    "DISABLE_ENV",
    "LIFECYCLE_HOOKS",
    "PluginWarning",
    "call_observers",
    "components",
    "disabled_plugins",
    "extra_settings",
    "get_component",
    "load_plugins",
    "observed_hooks",
    "plugin_listing",
    "pm",
    "register_plugin",
    "reset",
    "unregister_plugin",
]
