"""Loading plugins: entry points, in-memory plugins, and the registries they fill.

One module-level pluggy :data:`pm` holds every plugin. :func:`load_plugins` runs once: it
imports each entry point of the group ``automl_transfer`` (the built-ins are declared in
``pyproject.toml`` exactly like a third party's), registers it under its entry-point name and
records its distribution, as ``PluginManager.load_setuptools_entrypoints`` does. Unlike that
method it never lets one broken plugin take the tool down: a plugin that fails to import, fails
pluggy's validation, implements a hook that does not exist or raises in a ``register_*`` hook
becomes one :class:`PluginWarning` and one entry of ``plugin_listing()["errors"]``, and every
other plugin keeps working. A name two plugins register is refused for both (see
:class:`~automl_transfer.registry.registry.Registry`), whatever the install order.

Plugins are skipped, before import, by name: ``load_plugins(disabled=...)``, the CLI's
``--disable-plugins a,b`` or the environment variable ``AUTOML_TRANSFER_DISABLE_PLUGINS=a,b``.
``AUTOML_TRANSFER_TRACE_PLUGINS=1`` prints every hook call and its result on stderr (pluggy's
hook-call monitoring), to answer "which plugin did that?".

Tests and embedding code add an in-memory plugin (a module, class or instance with
``@hookimpl`` functions) with :func:`register_plugin` and take it away with
:func:`unregister_plugin`; the registries are rebuilt after each. :func:`reset` forgets every
plugin so that the next lookup loads the entry points again.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from automl_transfer.contract import hookspecs
from automl_transfer.contract.components import Component
from automl_transfer.errors import PluginError
from automl_transfer.registry.registry import KINDS, Registry, registration_callback

#: The entry-point group plugins declare themselves in.
ENTRY_POINT_GROUP = "automl_transfer"
#: Comma-separated plugin names to skip, read by :func:`load_plugins`.
DISABLE_ENV = "AUTOML_TRANSFER_DISABLE_PLUGINS"
#: Set to 1 to print every hook call (pluggy's tracing) on stderr.
TRACE_ENV = "AUTOML_TRANSFER_TRACE_PLUGINS"
#: Our own distribution: its plugins load first.
OWN_DISTRIBUTION = "automl-transfer"
#: The registration hook that fills each kind's registry.
REGISTER_HOOKS = {
    "backbone": "register_backbones",
    "head": "register_heads",
    "dataset": "register_datasets",
    "layout": "register_weight_layouts",
    "regularizer": "register_regularizers",
    "batch_transform": "register_batch_transforms",
}


class PluginWarning(UserWarning):
    """A plugin failed to load, to register or to observe; the tool goes on without it."""


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, recording the distribution of plugins loaded from entry points.

    The record is the one ``load_setuptools_entrypoints`` keeps, so that
    ``pm.list_plugin_distributions()`` stays true; ``unregister`` also forgets it.
    """

    def register_from_distribution(
        self, plugin: object, name: str, distribution: importlib.metadata.Distribution
    ) -> None:
        """Register ``plugin`` as ``name`` and remember that ``distribution`` provided it.

        :raises pluggy.PluginValidationError: when a hook implementation does not fit its spec.
        :raises ValueError: when the plugin object is already registered under another name.
        """
        self.register(plugin, name=name)
        self._plugin_distinfo.append((plugin, distribution))

    def unregister(self, plugin: Any | None = None, name: str | None = None) -> Any | None:
        """Unregister like pluggy, and drop the plugin's distribution record too."""
        removed = super().unregister(plugin, name)
        self._plugin_distinfo[:] = [pair for pair in self._plugin_distinfo if pair[0] is not removed]
        return removed


#: The plugin manager. ``pm.hook.<name>(...)`` calls every plugin; prefer the functions below.
pm = _PluginManager(hookspecs.PROJECT_NAME)
pm.add_hookspecs(hookspecs)


@dataclass
class LoadedPlugin:
    """A registered plugin and everything its ``register_*`` hooks handed over.

    :param name: the plugin's (entry-point) name.
    :param distribution: the distribution that installed it, ``None`` for an in-memory plugin.
    :param version: that distribution's version.
    :param offered: the components its ``register_*`` hooks registered.
    """

    name: str
    distribution: str | None
    version: str | None
    offered: list[Component] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Where the plugin came from, for messages: ``distribution NAME VERSION`` or ``no distribution``."""
        return distribution_label(self.distribution, self.version)


@dataclass(frozen=True)
class Failure:
    """One plugin problem, already worded as the line users see."""

    name: str
    error: str


@dataclass
class _State:
    loaded: bool = False
    disabled: frozenset[str] = frozenset()
    plugins: dict[str, LoadedPlugin] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    clashes: list[Failure] = field(default_factory=list)
    registries: dict[str, Registry] = field(default_factory=lambda: {kind: Registry(kind) for kind in KINDS})


_state = _State()
_lock = threading.RLock()


def load_plugins(disabled: Iterable[str] | None = None) -> None:
    """Load every plugin of the entry-point group ``automl_transfer``, once.

    Plugins named in ``disabled`` or in ``AUTOML_TRANSFER_DISABLE_PLUGINS`` (comma-separated)
    are not imported. A later call loads nothing new but still drops plugins it is asked to
    disable. A broken plugin never raises here: it becomes a :class:`PluginWarning` and an
    entry of ``plugin_listing()["errors"]``.

    :param disabled: plugin (entry-point) names to skip.
    """
    names = set(disabled or ()) | set(_split_names(os.environ.get(DISABLE_ENV, "")))
    with _lock:
        if _state.loaded:
            dropped = sorted(names & set(_state.plugins))
            for name in dropped:
                _forget(name)
                pm.set_blocked(name)
            _state.disabled = _state.disabled | names
            if dropped:
                _rebuild_registries()
            return
        _state.loaded = True
        _state.disabled = frozenset(names)
        for name in sorted(names):
            pm.set_blocked(name)
        if os.environ.get(TRACE_ENV, "").strip() not in ("", "0"):
            pm.trace.root.setwriter(sys.stderr.write)
            pm.enable_tracing()
        seen: set[str] = set()
        for entry_point in _entry_points():
            seen.add(entry_point.name)
            _load_entry_point(entry_point)
        for name in sorted(names - seen):
            message = f"cannot disable plugin {name!r}: no installed plugin has that name"
            warnings.warn(message, PluginWarning, stacklevel=2)
        _rebuild_registries()


def register_plugin(plugin: object, name: str) -> None:
    """Register an in-memory plugin, a module, class or instance with ``@hookimpl`` functions.

    Entry-point plugins are loaded first. The plugin goes through the same checks as an
    installed one, so a problem becomes a :class:`PluginWarning` and an entry of
    ``plugin_listing()["errors"]``, not an exception. A disabled name is ignored. Undo with
    :func:`unregister_plugin`.

    :param plugin: the object holding the hook implementations.
    :param name: the plugin's name in listings and error messages.
    :raises ValueError: when a plugin with that name is already registered.
    """
    with _lock:
        load_plugins()
        if pm.has_plugin(name) or name in _state.plugins:
            raise ValueError(f"a plugin named {name!r} is already registered; pick another name")
        _add_plugin(plugin, name, distribution=None)
        _rebuild_registries()


def unregister_plugin(name: str) -> None:
    """Remove the plugin registered as ``name`` with its components and errors.

    Does nothing when no plugin has that name (so cleanup code can always call it).
    """
    with _lock:
        _forget(name)
        _state.failures = [failure for failure in _state.failures if failure.name != name]
        _rebuild_registries()


def reset() -> None:
    """Forget every plugin, error and disabled name; the next lookup loads entry points again."""
    global _state
    with _lock:
        for name, plugin in pm.list_name_plugin():
            if plugin is None:
                pm.unblock(name)
            else:
                pm.unregister(name=name)
        _state = _State()


def get_component(kind: str, name: str) -> Component:
    """Return the component of ``kind`` (``"backbone"``, ``"head"`` or ``"dataset"``) named ``name``.

    :raises UnknownComponentError: when no loaded plugin registers ``name``; the message
        lists close matches and points to ``automl-transfer plugins``.
    :raises PluginError: when two plugins register ``name``; the message names both and
        how to keep one.
    :raises ValueError: for an unknown ``kind``.
    """
    return _registry(kind).get(name)


def components(kind: str, in_load_order: bool = False) -> list[Component]:
    """Return every usable component of ``kind``, sorted by name.

    :param in_load_order: in the order plugins registered them instead (built-ins first), the
        order regularizers and batch transforms are applied in.
    :raises ValueError: for an unknown ``kind``.
    """
    registry = _registry(kind)
    return registry.in_load_order() if in_load_order else list(registry)


def disabled_plugins() -> list[str]:
    """Return the plugin names disabled by argument or environment, sorted."""
    load_plugins()
    return sorted(_state.disabled)


def loaded_plugins() -> list[LoadedPlugin]:
    """Return the registered plugins, sorted by name (entry points are loaded first)."""
    load_plugins()
    with _lock:
        return sorted(_state.plugins.values(), key=lambda plugin: plugin.name)


def plugin_problems() -> list[Failure]:
    """Return every plugin problem warned so far: failures to load or register, then name clashes."""
    load_plugins()
    with _lock:
        return list(_state.failures + _state.clashes)


def plugin_label(plugin: object) -> tuple[str, str]:
    """Return the name and the ``distribution NAME VERSION`` label of a registered plugin object."""
    name = pm.get_name(plugin) or repr(plugin)
    record = _state.plugins.get(name)
    return name, record.label if record is not None else "no distribution"


def call_one_plugin(hook_name: str, plugin: object, kwargs: dict[str, Any]) -> None:
    """Call ``plugin``'s implementations of ``hook_name`` only, so a failure is its own."""
    others = [other for other in pm.get_plugins() if other is not plugin]
    pm.subset_hook_caller(hook_name, others)(**kwargs)


def distribution_label(distribution: str | None, version: str | None) -> str:
    """``distribution NAME VERSION`` for messages, or ``no distribution`` for an in-memory plugin."""
    return f"distribution {distribution} {version}" if distribution else "no distribution"


def describe(exc: BaseException) -> str:
    """``TypeName: message`` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _split_names(text: str) -> list[str]:
    """Split ``"a, b,,c"`` into ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Entry points of our group, ours first, then by distribution and name (a stable order).

    ``importlib.metadata.entry_points`` already keeps only the first of several copies of one
    distribution on ``sys.path``, like the import system does.
    """

    def order(entry_point: importlib.metadata.EntryPoint) -> tuple[bool, str, str]:
        distribution = _distribution_name(entry_point.dist) or ""
        return (distribution != OWN_DISTRIBUTION, distribution, entry_point.name)

    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=order)


def _distribution_name(distribution: importlib.metadata.Distribution | None) -> str | None:
    return None if distribution is None else distribution.metadata["Name"]


def _load_entry_point(entry_point: importlib.metadata.EntryPoint) -> None:
    """Import and register one entry point; any failure is recorded, never raised."""
    if pm.is_blocked(entry_point.name):
        return
    distribution = entry_point.dist
    label = distribution_label(_distribution_name(distribution), distribution.version if distribution else None)
    if entry_point.name in _state.plugins:
        first = _state.plugins[entry_point.name]
        _fail(
            entry_point.name,
            label,
            f"ignored, because distribution {first.distribution} already provides a plugin named "
            f"{entry_point.name!r}; uninstall one of the two",
        )
        return
    try:
        plugin = entry_point.load()
    except Exception as exc:
        _fail(entry_point.name, label, f"cannot be imported from {entry_point.value}: {describe(exc)}")
        return
    _add_plugin(plugin, entry_point.name, distribution)


def _add_plugin(plugin: object, name: str, distribution: importlib.metadata.Distribution | None) -> None:
    """Register ``plugin`` with pluggy, validate it and collect its registrations."""
    distribution_name = _distribution_name(distribution)
    version = distribution.version if distribution is not None else None
    label = distribution_label(distribution_name, version)
    if pm.is_blocked(name):
        return
    try:
        if distribution is None:
            pm.register(plugin, name=name)
        else:
            pm.register_from_distribution(plugin, name, distribution)
    except (pluggy.PluginValidationError, ValueError) as exc:
        _fail(name, label, f"is not a valid plugin: {describe(exc)}")
        return
    if not _passes_check_pending(plugin, name, label):
        return
    loaded = LoadedPlugin(name, distribution_name, version)
    for kind, hook_name in REGISTER_HOOKS.items():
        staged: list[Component] = []
        try:
            call_one_plugin(hook_name, plugin, {"register": registration_callback(kind, name, staged)})
        except Exception as exc:
            _fail(name, label, f"{hook_name} raised {describe(exc)}; none of its {kind}s are registered")
            continue
        loaded.offered.extend(staged)
    _state.plugins[name] = loaded


def _passes_check_pending(plugin: object, name: str, label: str) -> bool:
    """Run ``pm.check_pending()``; unregister and record every plugin it rejects.

    :returns: whether ``plugin`` itself is still registered.
    """
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            rejected = pm.get_name(exc.plugin)
            if rejected is None:
                raise
            record = _state.plugins.get(rejected)
            _forget(rejected)
            where = record.label if record is not None and rejected != name else label
            _fail(rejected, where, f"implements a hook that does not exist: {describe(exc)}")
            continue
        return pm.get_plugin(name) is plugin


def _rebuild_registries() -> None:
    """Refill every registry from the plugins in load order; warn once about each new name clash."""
    registries = {kind: Registry(kind) for kind in KINDS}
    clashes: dict[tuple[str, str], Failure] = {}
    for plugin in _state.plugins.values():
        for component in plugin.offered:
            try:
                registries[component.kind].add(component)
            except PluginError as exc:  # the registry refused the name for every plugin offering it
                clashes[(component.kind, component.name)] = Failure(plugin.name, _line(plugin.name, plugin.label, str(exc)))
    new_clashes = [clash for clash in clashes.values() if clash not in _state.clashes]
    _state.registries, _state.clashes = registries, list(clashes.values())
    for clash in new_clashes:
        warnings.warn(clash.error, PluginWarning, stacklevel=3)


def _registry(kind: str) -> Registry:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
    load_plugins()
    return _state.registries[kind]


def _forget(name: str) -> None:
    """Unregister ``name`` from pluggy (if there) and drop its registrations."""
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    _state.plugins.pop(name, None)


def _fail(name: str, label: str, problem: str) -> None:
    """Record and warn about one plugin problem."""
    failure = Failure(name, _line(name, label, problem))
    _state.failures.append(failure)
    warnings.warn(failure.error, PluginWarning, stacklevel=3)


def _line(name: str, label: str, problem: str) -> str:
    """Word a plugin problem as one line naming the plugin and its distribution."""
    where = f" ({label})" if label else ""
    return " ".join(f"plugin {name!r}{where}: {problem}".split())
