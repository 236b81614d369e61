"""The plugin author's API: what a plugin's components need from automl-transfer, in one import.

A plugin is a module with ``@hookimpl`` functions, declared in the entry-point group
``automl_transfer`` (see the plugin authoring guide in
``examples/automl-transfer-example-plugin/README.md``)::

    from automl_transfer.plugin import Backbone, hookimpl

    @hookimpl
    def register_backbones(register):
        register("tinycnn", build_tinycnn, description="a small CNN")

The hooks and their arguments are in :mod:`automl_transfer.contract.hookspecs`. Importing this
module is cheap (no torch, timm or optuna), so a plugin that imports torch only inside its
builders keeps ``automl-transfer plugins`` and ``--help`` fast. Each audience has its module:

- this one, for the components a plugin registers: ``hookimpl``; ``Backbone``,
  ``ImageDataset``, ``ImageItem`` (what builders and loaders return); ``TrainingContext`` (what a
  regularizer or batch transform receives when a fit starts); ``NO_WEIGHTS`` (the
  ``weights`` value asking a backbone builder for random weights); ``parse_options``,
  ``positive_int``, ``non_negative_int`` (dataset options ``key=value,...``); ``is_image_file``,
  ``image_extensions`` (which files are images); ``get_component`` (what another plugin
  registered, to build on it: ``get_component("backbone", "timm")``); and the errors: ``AutoMLTransferError`` and its
  subclasses ``PluginError``, ``DatasetError``, ``WeightsError``, ``UnknownComponentError``. Raise
  them for problems the user can fix: the CLI prints their message on one line. A backbone
  builder raises ``WeightsUnreachableError`` (a ``WeightsError`` with a short ``reason``) for
  pretrained weights it can neither download nor find in its cache, so that the search lists
  every such source in one message.
- :mod:`automl_transfer.plugin_testing`, for a plugin's own tests: ``register_plugin``,
  ``unregister_plugin``.
- :mod:`automl_transfer.plugin_observers`, for observers (it imports optuna and rich):
  ``leaderboard``, ``wide_console``, ``trial_counts``.

The built-in plugins import nothing but these three modules from automl-transfer. The names
that moved to the other two are still served here, with a ``DeprecationWarning`` saying where.
"""

from __future__ import annotations

import warnings
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
from automl_transfer.contract.training import TrainingContext
from automl_transfer.data.image_files import image_extensions, is_image_file
from automl_transfer.errors import (
    AutoMLTransferError,
    DatasetError,
    PluginError,
    UnknownComponentError,
    WeightsError,
    WeightsUnreachableError,
)
from automl_transfer.registry import get_component

__all__ = [
    "AutoMLTransferError",
    "Backbone",
    "DatasetError",
    "ImageDataset",
    "ImageItem",
    "NO_WEIGHTS",
    "PluginError",
    "TrainingContext",
    "UnknownComponentError",
    "WeightsError",
    "WeightsUnreachableError",
    "get_component",
    "hookimpl",
    "image_extensions",
    "is_image_file",
    "non_negative_int",
    "parse_options",
    "positive_int",
]

#: The names this module served before each audience had its own, and where they are now.
MOVED = {
    **dict.fromkeys(("register_plugin", "unregister_plugin"), "automl_transfer.plugin_testing"),
    **dict.fromkeys(("leaderboard", "wide_console", "trial_counts"), "automl_transfer.plugin_observers"),
}


def __getattr__(name: str) -> Any:
    """Serve a name that moved to another plugin module, with a ``DeprecationWarning`` naming its new place.

    :raises AttributeError: for a name this module never had.
    """
    if name not in MOVED:
        raise AttributeError(f"module 'automl_transfer.plugin' has no attribute {name!r}")
    warnings.warn(f"automl_transfer.plugin.{name} moved: import it from {MOVED[name]}", DeprecationWarning, stacklevel=2)
    if name == "trial_counts":
        from automl_transfer.search import counting as module
    elif name in ("leaderboard", "wide_console"):
        from automl_transfer.reporting import leaderboard as module
    else:
        from automl_transfer import registry as module
    return getattr(module, name)
