"""Fixtures shared by every test module: registering in-memory plugins that always go away.

The suite trains many tiny models, in this process and in the search and worker processes
the tests start, which inherit this environment. With one OpenMP thread each they share a
busy machine politely: with one thread per core, OpenMP's spin-waiting makes tiny models
train 10-20 times slower as soon as other work competes for the cores. Set
``OMP_NUM_THREADS`` yourself to override it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is first imported, here and in every child
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

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
