"""The registry of one kind of component: backbones, heads or datasets.

A :class:`Registry` maps the names users type to the :class:`~automl_transfer.contract.components.Component`
a plugin registered, and remembers which plugin that was. Two plugins that register the same
name do not shadow one another in an order that depends on how they were installed: the name
is refused for both, and looking it up says which plugins clash and how to choose one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from automl_transfer.contract.components import Component
from automl_transfer.errors import PluginError, UnknownComponentError

#: The kinds of component plugins register, as written in ``Component.kind``.
KINDS = ("backbone", "head", "dataset", "layout", "regularizer", "batch_transform")


class Registry:
    """Components of one kind, by name.

    :param kind: one of :data:`KINDS`.
    :raises ValueError: for any other ``kind``.
    """

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self._by_name: dict[str, Component] = {}
        self._clashes: dict[str, list[Component]] = {}

    def add(self, component: Component) -> None:
        """Add ``component`` under its name.

        When another plugin already registered the name, neither keeps it: the name is
        recorded as a clash and :meth:`get` refuses it.

        :raises PluginError: for a clash, naming every plugin that registers the name (the
            clash is recorded before raising, so the caller may report it and go on).
        :raises ValueError: when ``component`` is of another kind (a bug in the caller).
        """
        if component.kind != self.kind:
            raise ValueError(f"a {component.kind} cannot go into the {self.kind} registry")
        name = component.name
        if name in self._clashes:
            self._clashes[name].append(component)
        elif name in self._by_name:
            self._clashes[name] = [self._by_name.pop(name), component]
        else:
            self._by_name[name] = component
            return
        raise PluginError(self.clash_message(name))

    def clash_message(self, name: str) -> str:
        """Say which plugins register ``name`` and how to keep one of them."""
        plugins = [component.plugin for component in self._clashes[name]]
        listed = " and ".join(repr(plugin) for plugin in plugins)
        return (
            f"{self.kind} {name!r} is registered by plugins {listed}, so neither is used; keep one by "
            f"disabling the others with --disable-plugins or AUTOML_TRANSFER_DISABLE_PLUGINS "
            f"(e.g. --disable-plugins {plugins[-1]})"
        )

    def get(self, name: str) -> Component:
        """Return the component registered as ``name``.

        :raises PluginError: when several plugins register ``name`` (see :meth:`add`).
        :raises UnknownComponentError: when no plugin registered ``name``; the message lists
            close matches and says how to list everything.
        """
        component = self._by_name.get(name)
        if component is not None:
            return component
        if name in self._clashes:
            raise PluginError(self.clash_message(name))
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(name, list(self._by_name), n=3)
        if close:
            message += f"; did you mean {', '.join(repr(match) for match in close)}?"
        elif not self._by_name:
            message += f"; no loaded plugin registers a {self.kind}"
        raise UnknownComponentError(f"{message} (run `automl-transfer plugins` to list all)")

    def in_load_order(self) -> list[Component]:
        """Return the usable components in the order their plugins registered them (built-ins first)."""
        return list(self._by_name.values())

    def __iter__(self) -> Iterator[Component]:
        """Iterate over the usable components (clashing names left out), sorted by name."""
        return iter(sorted(self._by_name.values(), key=lambda component: component.name))

    def __len__(self) -> int:
        return len(self._by_name)


def registration_callback(kind: str, plugin_name: str, staged: list[Component]) -> Callable[..., None]:
    """Return the ``register`` function a ``register_*`` hook receives.

    :param kind: the kind of component the hook registers.
    :param plugin_name: the plugin whose hook is called, recorded in each component.
    :param staged: the list each registered :class:`Component` is appended to.
    :returns: ``register(name, build, ...)`` with the keyword arguments of that kind's hookspec.
    :raises PluginError: (from the returned function) for an unusable name, a builder that is
        not callable, or unusable ``offline`` or ``settings``.
    """

    def stage(name: str, build: Callable[..., Any], description: str, **options: Any) -> None:
        staged.append(_component(kind, name, build, plugin_name, description, **options))

    def register_backbone(
        name: str, build: Callable[..., Any], description: str = "", offline: Callable[[], list[str]] | None = None
    ) -> None:
        """Register backbone builder ``name``: ``build(model, weights)`` returns a Backbone."""
        stage(name, build, description, offline=offline)

    def register_head(
        name: str, build: Callable[..., Any], space: dict[str, Any] | None = None, description: str = ""
    ) -> None:
        """Register head ``name``: ``build(in_features, num_classes, **params)``; ``space`` for params."""
        stage(name, build, description, space=space)

    def register_dataset(name: str, load: Callable[..., Any], description: str = "") -> None:
        """Register dataset loader ``name``: ``load(location)`` returns an ImageDataset."""
        stage(name, load, description)

    def register_layout(name: str, convert: Callable[..., Any], description: str = "") -> None:
        """Register weights layout ``name``: ``convert(architecture, state_dict, model)`` returns a dict or None."""
        stage(name, convert, description)

    def register_training_extension(
        name: str, build: Callable[..., Any], settings: dict[str, Any] | None = None, description: str = ""
    ) -> None:
        """Register ``name``: ``build(context)`` returns the extension or None; ``settings`` its extra keys."""
        stage(name, build, description, settings=settings)

    return {
        "backbone": register_backbone,
        "head": register_head,
        "dataset": register_dataset,
        "layout": register_layout,
        "regularizer": register_training_extension,
        "batch_transform": register_training_extension,
    }[kind]


def _component(
    kind: str,
    name: str,
    build: Callable[..., Any],
    plugin_name: str,
    description: str,
    space: dict[str, Any] | None = None,
    offline: Callable[[], list[str]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Component:
    """Check what a plugin registers and return it as a :class:`Component`.

    :raises PluginError: for an unusable name, a builder or ``offline`` that is not callable,
        or ``settings`` that is not a mapping of extra keys (names without dots) to values.
    """
    if not isinstance(name, str) or not name or ":" in name or any(char.isspace() for char in name):
        raise PluginError(f"{kind} name {name!r} is not usable: use a non-empty name without spaces or ':'")
    if not callable(build):
        raise PluginError(f"{kind} {name!r} was registered with {build!r}, which is not callable")
    if offline is not None and not callable(offline):
        raise PluginError(f"{kind} {name!r} was registered with offline={offline!r}, which is not callable")
    if settings is not None and not (
        isinstance(settings, dict) and all(isinstance(key, str) and key and "." not in key for key in settings)
    ):
        raise PluginError(
            f"{kind} {name!r} was registered with settings={settings!r}; give a mapping of extra keys "
            "(names without dots) to the value that leaves it off, such as {'mixup': 0.0}"
        )
    return Component(kind, name, build, plugin_name, description, dict(space or {}), offline, dict(settings or {}))
