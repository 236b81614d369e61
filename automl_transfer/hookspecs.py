"""Deprecated path: ``hookimpl`` is in :mod:`automl_transfer.plugin`, the specs in :mod:`automl_transfer.contract.hookspecs`."""

from automl_transfer._compat import forward

__getattr__ = forward(__name__, {"hookimpl": "automl_transfer.plugin", "hookspec": "automl_transfer.contract.hookspecs"})
