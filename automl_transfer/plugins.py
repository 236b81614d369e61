"""Deprecated path: import ``get_component``, ``register_plugin`` and ``unregister_plugin`` from :mod:`automl_transfer.plugin`."""

from automl_transfer._compat import forward

__getattr__ = forward(
    __name__, dict.fromkeys(("get_component", "register_plugin", "unregister_plugin"), "automl_transfer.plugin")
)
