"""The exceptions automl-transfer raises on purpose, and the exit codes they become.

Every error a user can cause (bad input, a missing plugin, weights that cannot be reached)
is an :class:`AutoMLTransferError`. The CLI prints its message on one line and exits with
:data:`EXIT_USER_ERROR`; anything else is a bug and keeps its traceback.
"""

#: Exit code for errors the user can fix (an :class:`AutoMLTransferError`), as for bad usage.
EXIT_USER_ERROR = 2
#: Exit code after Ctrl-C or SIGTERM, as shells report SIGINT.
EXIT_INTERRUPTED = 130


class AutoMLTransferError(Exception):
    """Root of every error automl-transfer raises for bad input or an unusable environment."""


class PluginError(AutoMLTransferError):
    """A plugin is broken: it failed to import, a hook raised, or two plugins claim one name."""


class UnknownComponentError(AutoMLTransferError):
    """A backbone, head or dataset name that no loaded plugin registers."""


class SearchSpaceError(AutoMLTransferError):
    """A search-space YAML that is malformed, names an unknown key or holds an invalid range."""


class DatasetError(AutoMLTransferError):
    """A dataset that cannot be used: missing path, too few classes, an empty class, bad images."""


class WeightsError(AutoMLTransferError):
    """Pretrained weights that cannot be reached, are unsafe to load or do not fit the model."""


class WeightsUnreachableError(WeightsError):
    """Pretrained weights that can be neither downloaded nor found in the cache.

    :param message: the whole message, naming the weights and the alternatives.
    :param reason: the underlying failure in a few words (``OfflineModeIsEnabled: ...``), so
        that one message can list several unreachable sources.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class RunDirError(AutoMLTransferError):
    """A run directory that cannot be written or holds a different search than the one asked for."""


class StorageError(AutoMLTransferError):
    """An Optuna storage URL that cannot be reached or opened."""
