"""The ``digits`` dataset: scikit-learn's bundled 8x8 handwritten digits, no download needed.

Its 1797 grey images (about 180 per digit) are scaled from 0..16 to 0..255 and enlarged with
bicubic interpolation. The location holds options written ``key=value,key=value``:

``classes``
    the digits to use, as ranges and single digits: ``0-4``, ``5-9``, ``0,2,4``, ``0-2,7``
    (default ``0-9``). The class names are the digits, labels counting from 0 in order.
``per_class``
    keep this many training images per digit, chosen at random, and make the rest of the
    selected digits' images the held-out test set (default: all images train, no test set).
``seed``
    seeds the ``per_class`` choice (default 0).
``size``
    the side of the square images in pixels (default 32).

The demo's transfer task: search on ``digits:classes=0-4``, then transfer to
``digits:classes=5-9,per_class=10,seed=0``: ten labelled images per new digit, the remaining
ones scored as the test set. The same options always give the same dataset.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from automl_transfer.plugin import (
    DatasetError,
    ImageDataset,
    hookimpl,
    parse_options,
    positive_int,
)


def parse_digits(text: str) -> list[int]:
    """Parse a digit selection such as ``0-4`` or ``0,2,7-9`` into sorted unique digits.

    :raises ValueError: for anything but digits 0..9 and ascending ranges of them.
    """
    digits: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError("write digits and ranges such as 0-4 or 0,2,7-9")
        low, high = int(first), int(last) if dash else int(first)
        if not 0 <= low <= high <= 9:
            raise ValueError(f"{part.strip()!r} is not a digit 0-9 or an ascending range of them")
        digits.update(range(low, high + 1))
    return sorted(digits)


OPTIONS = {"classes": parse_digits, "per_class": positive_int, "seed": int, "size": positive_int}


def _to_image(pixels: np.ndarray, size: int) -> Image.Image:
    grey = Image.fromarray(np.round(pixels * (255 / 16)).clip(0, 255).astype(np.uint8), mode="L")
    return grey.resize((size, size), Image.Resampling.BICUBIC)


def load(location: str | None) -> ImageDataset:
    """Load the digits selected by the options in ``location`` (see this module's docstring).

    :param location: ``key=value`` options, or ``None`` for all ten digits as training data.
    :returns: an :class:`ImageDataset` of in-memory grey images; ``test`` set with ``per_class``.
    :raises DatasetError: for an unknown option (listing the valid ones) or a bad value, a
        ``per_class`` that leaves a digit no test image, or scikit-learn not installed.
    """
    options = parse_options(location, OPTIONS, "digits")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset comes with scikit-learn: pip install scikit-learn") from None
    bundled = load_digits()
    selected = options.get("classes", list(range(10)))
    if len(selected) < 2:
        raise DatasetError(f"digits: classes={selected} selects 1 digit; a classifier needs at least 2")
    size = options.get("size", 32)
    per_class = options.get("per_class")
    train, test = [], []
    for label, digit in enumerate(selected):
        indices = np.flatnonzero(bundled.target == digit)
        if per_class is not None:
            if per_class >= len(indices):
                raise DatasetError(
                    f"digits: per_class={per_class} leaves no test images; digit {digit} has {len(indices)} images"
                )
            chosen = np.random.default_rng([options.get("seed", 0), digit]).permutation(indices)
            test.extend((_to_image(bundled.images[index], size), label) for index in np.sort(chosen[per_class:]))
            indices = np.sort(chosen[:per_class])
        train.extend((_to_image(bundled.images[index], size), label) for index in indices)
    return ImageDataset([str(digit) for digit in selected], train, None, test or None,
                        origin=f"digits:{location}" if location else "digits")


@hookimpl
def register_datasets(register):
    """Register the ``digits`` dataset loader."""
    register("digits", load, description="scikit-learn's 8x8 handwritten digits; options classes, per_class, seed, size")
