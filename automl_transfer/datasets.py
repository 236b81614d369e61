"""Deprecated path: import ``parse_options`` and ``positive_int`` from :mod:`automl_transfer.plugin`."""

from automl_transfer._compat import forward

__getattr__ = forward(__name__, dict.fromkeys(("parse_options", "positive_int"), "automl_transfer.plugin"))
