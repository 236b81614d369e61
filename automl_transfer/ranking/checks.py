"""Checking the arrays the estimators take: features ``(N, D)`` and class labels ``(N,)``."""

from __future__ import annotations

from typing import Any

import numpy as np


def features_and_labels(features: Any, labels: Any, names: tuple[str, str] = ("features", "labels")) -> tuple[np.ndarray, np.ndarray]:
    """Return ``features`` as finite float64 ``(N, D)`` and ``labels`` as int64 ``(N,)``.

    :raises ValueError: a shape, dtype or length that does not fit, a non-finite value, a
        negative label.
    """
    f = np.asarray(features)
    if f.ndim != 2 or 0 in f.shape:
        raise ValueError(f"{names[0]} must be a non-empty 2-D array (N, D), got shape {f.shape}")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise ValueError(f"{names[0]} must be numeric, got dtype {f.dtype}")
    f = f.astype(np.float64, copy=False)
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{names[0]} contains NaN or infinite values")
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{names[1]} must be a 1-D array of integer class ids, got {y.dtype} of shape {y.shape}")
    if len(y) != len(f):
        raise ValueError(f"{names[1]} has {len(y)} entries but {names[0]} has {len(f)} rows")
    if y.min() < 0:
        raise ValueError(f"{names[1]} must be non-negative class ids")
    return f, y.astype(np.int64, copy=False)


def at_least_two_classes(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return the classes present in ``labels``, sorted.

    :raises ValueError: fewer than two.
    """
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(f"{name} must hold at least 2 classes, got {classes.size}")
    return classes
