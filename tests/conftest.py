"""Fixtures shared by every test module: registering in-memory plugins that always go away."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from automl_transfer import registry as plugins


@pytest.fixture
def register_plugin() -> Iterator[Callable[[object, str], object]]:
    """Register in-memory plugins for one test.

    Call ``register_plugin(plugin, name)`` with a module, class or instance holding
    ``@hookimpl`` functions; it returns ``plugin``. Every plugin registered this way is
    unregistered after the test, and the registries are rebuilt without it.
    """
    names: list[str] = []

    def register(plugin: object, name: str) -> object:
        plugins.register_plugin(plugin, name)
        names.append(name)
        return plugin

    yield register
    for name in reversed(names):
        plugins.unregister_plugin(name)


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Forget every loaded plugin before and after the test, so it can call ``load_plugins`` anew."""
    plugins.reset()
    yield
    plugins.reset()
