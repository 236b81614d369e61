"""Deprecated path: import ``get_component`` from :mod:`automl_transfer.plugin`, ``register_plugin`` and ``unregister_plugin`` from :mod:`automl_transfer.plugin_testing`."""

from automl_transfer._compat import forward

__getattr__ = forward(
    __name__,
    {
        "get_component": "automl_transfer.plugin",
        **dict.fromkeys(("register_plugin", "unregister_plugin"), "automl_transfer.plugin_testing"),
    },
)
