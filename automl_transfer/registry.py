"""The registry of one kind of component: backbones, heads or datasets.

A :class:`Registry` maps the names users type to the :class:`~automl_transfer.components.Component`
a plugin registered, and remembers which plugin that was, so that a clash or a typo can be
reported with the plugins involved. :mod:`automl_transfer.plugins` fills one per kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from automl_transfer.components import Component
from automl_transfer.errors import PluginError, UnknownComponentError

#: The kinds of component plugins register, as written in ``Component.kind``.
KINDS = ("backbone", "head", "dataset")


class Registry:
    """Components of one kind, by name, in the order they were added.

    :param kind: one of :data:`KINDS`.
    :raises ValueError: for any other ``kind``.
    """

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self._by_name: dict[str, Component] = {}

    def add(self, component: Component) -> None:
        """Add ``component`` under its name.

        :raises PluginError: when another plugin already registered the name; the message
            names both plugins and the first registration stays in place.
        :raises ValueError: when ``component`` is of another kind (a bug in the caller).
        """
        if component.kind != self.kind:
            raise ValueError(f"a {component.kind} cannot go into the {self.kind} registry")
        existing = self._by_name.get(component.name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {component.name!r} from plugin {component.plugin!r} clashes with the one "
                f"from plugin {existing.plugin!r}; keeping {existing.plugin!r}'s. Disable one of them "
                "with --disable-plugins or AUTOML_TRANSFER_DISABLE_PLUGINS"
            )
        self._by_name[component.name] = component

    def get(self, name: str) -> Component:
        """Return the component registered as ``name``.

        :raises UnknownComponentError: when no plugin registered ``name``; the message lists
            close matches and says how to list everything.
        """
        component = self._by_name.get(name)
        if component is not None:
            return component
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(name, list(self._by_name), n=3)
        if close:
            message += f"; did you mean {', '.join(repr(match) for match in close)}?"
        elif not self._by_name:
            message += f"; no loaded plugin registers a {self.kind}"
        raise UnknownComponentError(f"{message} (run `automl-transfer plugins` to list all)")

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Component]:
        """Iterate over the components, sorted by name."""
        return iter(sorted(self._by_name.values(), key=lambda component: component.name))

    def __len__(self) -> int:
        return len(self._by_name)
