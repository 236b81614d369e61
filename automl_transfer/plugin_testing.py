"""Helpers for testing a plugin: register it in memory, then unregister it.

Test a plugin without installing it, and always unregister it::

    import pytest
    from automl_transfer.plugin import get_component
    from automl_transfer.plugin_testing import register_plugin, unregister_plugin

    @pytest.fixture
    def example_plugin():
        register_plugin(automl_transfer_example, name="example")
        yield
        unregister_plugin("example")

    def test_tinycnn_builds(example_plugin):
        assert get_component("backbone", "tinycnn").build("small", "none").num_features == 64

Names: ``register_plugin(plugin, name)`` adds an in-memory plugin (a module or an object with
``@hookimpl`` methods) and returns it; ``unregister_plugin(name)`` removes it. What the plugin
registered is looked up with :func:`automl_transfer.plugin.get_component`. Importing this
module is cheap (no torch, timm or optuna).
"""

from __future__ import annotations

from automl_transfer.registry import register_plugin, unregister_plugin

__all__ = ["register_plugin", "unregister_plugin"]
