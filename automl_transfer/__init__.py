"""automl-transfer: search pretrained backbones, heads and fine-tuning settings with Optuna.

This module is the Python API: :class:`TransferSearch`, :class:`SearchConfig`, :func:`load_model`,
the worker API :func:`join_search` and :func:`work` (a worker of a recorded search, from Python:
a SLURM array task, a Kubernetes Job, a Ray task) and the errors (imported on first use, so
``import automl_transfer`` stays light). Backbones,
heads and datasets come from pluggy plugins (entry-point group ``automl_transfer``); a plugin
imports what it needs from :mod:`automl_transfer.plugin`. ``ARCHITECTURE.md`` maps the packages.
"""

from importlib.metadata import PackageNotFoundError, version

from automl_transfer.errors import (
    AutoMLTransferError,
    DatasetError,
    PluginError,
    RunDirError,
    SearchSpaceError,
    StorageError,
    UnknownComponentError,
    WeightsError,
)

try:
    __version__ = version("automl-transfer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AutoMLTransferError",
    "SearchConfig",
    "TransferSearch",
    "join_search",
    "load_model",
    "work",
    "DatasetError",
    "PluginError",
    "RunDirError",
    "SearchSpaceError",
    "StorageError",
    "UnknownComponentError",
    "WeightsError",
    "__version__",
]


def __getattr__(name):
    """Import the search, worker and inference front doors on first use, keeping plain imports light."""
    if name == "TransferSearch":
        from automl_transfer.search.search import TransferSearch

        return TransferSearch
    if name == "SearchConfig":
        from automl_transfer.search.config import SearchConfig

        return SearchConfig
    if name in ("join_search", "work"):
        from automl_transfer.search import join

        return getattr(join, name)
    if name == "load_model":
        from automl_transfer.inference.predictor import load_model

        return load_model
    raise AttributeError(f"module 'automl_transfer' has no attribute {name!r}")
