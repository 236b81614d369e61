"""Deprecated path: import ``Backbone``, ``ImageDataset`` and ``ImageItem`` from :mod:`automl_transfer.plugin`."""

from automl_transfer._compat import forward

__getattr__ = forward(__name__, dict.fromkeys(("Backbone", "ImageDataset", "ImageItem"), "automl_transfer.plugin"))
