"""Which plugin reads each ``extra`` setting: the keys regularizers and batch transforms declare."""

from __future__ import annotations

from automl_transfer.contract.components import Component
from automl_transfer.errors import PluginError
from automl_transfer.registry.manager import components

#: The kinds of component that change how a fit trains, reading their settings from ``extra``.
TRAINING_EXTENSION_KINDS = ("regularizer", "batch_transform")


def extra_settings() -> dict[str, Component]:
    """Return the regularizer or batch transform that declared each ``extra`` key, by key.

    :raises PluginError: when two of them declare the same key (neither could tell which the
        user meant); the message names both and how to disable one.
    """
    declared: dict[str, Component] = {}
    for kind in TRAINING_EXTENSION_KINDS:
        for component in components(kind, in_load_order=True):
            for key in component.settings:
                if key in declared:
                    other = declared[key]
                    raise PluginError(
                        f"extra.{key} is declared by {other.kind} {other.name!r} (plugin {other.plugin!r}) and by "
                        f"{component.kind} {component.name!r} (plugin {component.plugin!r}); disable one with "
                        f"--disable-plugins"
                    )
                declared[key] = component
    return declared
