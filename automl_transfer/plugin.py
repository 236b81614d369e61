"""The plugin author's API: everything a plugin needs from automl-transfer, in one import.

A plugin is a module with ``@hookimpl`` functions, declared in the entry-point group
``automl_transfer`` (see the plugin authoring guide in
``examples/automl-transfer-example-plugin/README.md``)::

    from automl_transfer.plugin import Backbone, hookimpl

    @hookimpl
    def register_backbones(register):
        register("tinycnn", build_tinycnn, description="a small CNN")

The hooks and their arguments are in :mod:`automl_transfer.contract.hookspecs`. Importing this
module is cheap (no torch, timm or optuna), so a plugin that imports torch only inside its
builders keeps ``automl-transfer plugins`` and ``--help`` fast. The built-in plugins import
nothing else from automl-transfer.

Names:

- ``hookimpl``: the marker for hook implementations.
- ``Backbone``, ``ImageDataset``, ``ImageItem``: what builders and loaders return.
- ``NO_WEIGHTS``: the ``weights`` value (``"none"``) asking a backbone builder for random weights.
- ``parse_options``, ``positive_int``, ``non_negative_int``: dataset options ``key=value,...``.
- ``is_image_file``, ``image_extensions``: which files are images.
- ``get_component``, ``register_plugin``, ``unregister_plugin``: look up what plugins register,
  and add or remove an in-memory plugin (for a plugin's own tests).
- ``leaderboard``, ``wide_console``, ``trial_counts``: for observers, the leaderboard and the
  trial counts of a study (imported on first use).
- The errors: ``AutoMLTransferError`` and its subclasses ``PluginError``, ``DatasetError``,
  ``WeightsError``, ``UnknownComponentError``; raise them for problems the user can fix: the
  CLI prints their message on one line. A backbone builder raises ``WeightsUnreachableError``
  (a ``WeightsError`` with a short ``reason``) for pretrained weights it can neither download
  nor find in its cache, so that the search lists every such source in one message.
"""

from __future__ import annotations

from typing import Any

from automl_transfer.contract.components import (
    NO_WEIGHTS,
    Backbone,
    ImageDataset,
    ImageItem,
)
from automl_transfer.contract.hookspecs import hookimpl
from automl_transfer.contract.options import (
    non_negative_int,
    parse_options,
    positive_int,
)
from automl_transfer.data.image_files import image_extensions, is_image_file
from automl_transfer.errors import (
    AutoMLTransferError,
    DatasetError,
    PluginError,
    UnknownComponentError,
    WeightsError,
    WeightsUnreachableError,
)
from automl_transfer.registry import get_component, register_plugin, unregister_plugin

__all__ = [
    "AutoMLTransferError",
    "Backbone",
    "DatasetError",
    "ImageDataset",
    "ImageItem",
    "NO_WEIGHTS",
    "PluginError",
    "UnknownComponentError",
    "WeightsError",
    "WeightsUnreachableError",
    "get_component",
    "hookimpl",
    "image_extensions",
    "is_image_file",
    "leaderboard",
    "non_negative_int",
    "parse_options",
    "positive_int",
    "register_plugin",
    "trial_counts",
    "unregister_plugin",
    "wide_console",
]

_LAZY = {
    "leaderboard": "automl_transfer.reporting.leaderboard",
    "wide_console": "automl_transfer.reporting.leaderboard",
    "trial_counts": "automl_transfer.search.counting",
}


def __getattr__(name: str) -> Any:
    """Import the reporting helpers on first use, keeping ``import automl_transfer.plugin`` light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'automl_transfer.plugin' has no attribute {name!r}")
