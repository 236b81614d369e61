"""The ``synthetic`` dataset: generated images for smoke tests and throughput runs.

Each class has its own colour and its own stripe pattern (orientation and frequency); every
image draws a random stripe phase, brightness and pixel noise, so the classes are easy but
not trivial to learn and a tiny model beats chance within an epoch or two. The location
holds options written ``key=value,key=value``:

``classes`` number of classes, at least 2 (default 4);
``per_class`` training images per class (default 32);
``test`` held-out test images per class (default 0: no test set);
``size`` side of the square images in pixels (default 64);
``seed`` seeds the generator (default 0).

For example ``synthetic:classes=10,per_class=500,size=224`` for a GPU throughput run. The
same options always give the same images, and a class's images do not depend on ``classes``.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from automl_transfer.plugin import (
    DatasetError,
    ImageDataset,
    hookimpl,
    non_negative_int,
    parse_options,
    positive_int,
)

OPTIONS = {"classes": positive_int, "per_class": positive_int, "test": non_negative_int,
           "size": positive_int, "seed": int}

#: Images generated at once, bounding the float32 scratch memory at ``_CHUNK * size**2 * 3``.
_CHUNK = 64

_GOLDEN_RATIO = (1 + 5**0.5) / 2


def _class_style(label: int) -> tuple[np.ndarray, float, float]:
    """Return the colour, stripe angle and stripe frequency of class ``label``."""
    hue = (label / _GOLDEN_RATIO) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.95), dtype=np.float32)
    angle = math.pi * ((label * 0.382) % 1.0)
    frequency = 2.0 + label % 4
    return colour, angle, frequency


def generate_images(label: int, count: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """Generate ``count`` RGB images of class ``label``, ``size`` pixels square, from ``rng``."""
    colour, angle, frequency = _class_style(label)
    coordinates = np.linspace(0.0, 1.0, size, dtype=np.float32)
    across = coordinates[None, :] * math.cos(angle) + coordinates[:, None] * math.sin(angle)
    images = []
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        phase = rng.uniform(0, 2 * math.pi, size=(n, 1, 1)).astype(np.float32)
        stripes = 0.5 + 0.5 * np.sin(2 * math.pi * frequency * across[None] + phase)
        brightness = rng.uniform(0.7, 1.1, size=(n, 1, 1, 1)).astype(np.float32)
        pixels = brightness * colour * (0.35 + 0.65 * stripes[..., None])
        pixels += rng.normal(0.0, 0.08, size=pixels.shape).astype(np.float32)
        as_bytes = np.round(pixels.clip(0.0, 1.0) * 255).astype(np.uint8)
        images.extend(Image.fromarray(array, mode="RGB") for array in as_bytes)
    return images


def load(location: str | None) -> ImageDataset:
    """Generate the dataset described by the options in ``location`` (see this module's docstring).

    :param location: ``key=value`` options, or ``None`` for the defaults.
    :returns: an :class:`ImageDataset` of in-memory RGB images; ``test`` set when ``test > 0``.
    :raises DatasetError: for an unknown option (listing the valid ones), a bad value, or
        fewer than 2 classes.
    """
    options = parse_options(location, OPTIONS, "synthetic")
    n_classes = options.get("classes", 4)
    if n_classes < 2:
        raise DatasetError(f"synthetic: classes={n_classes}; a classifier needs at least 2 classes")
    per_class, n_test = options.get("per_class", 32), options.get("test", 0)
    size, seed = options.get("size", 64), options.get("seed", 0)
    train, test = [], []
    for label in range(n_classes):
        train_rng = np.random.default_rng([seed, label, 0])
        train.extend((image, label) for image in generate_images(label, per_class, size, train_rng))
        test_rng = np.random.default_rng([seed, label, 1])
        test.extend((image, label) for image in generate_images(label, n_test, size, test_rng))
    width = len(str(n_classes - 1))
    class_names = [f"class_{label:0{width}d}" for label in range(n_classes)]
    return ImageDataset(class_names, train, None, test or None,
                        origin=f"synthetic:{location}" if location else "synthetic")


@hookimpl
def register_datasets(register):
    """Register the ``synthetic`` dataset loader."""
    register("synthetic", load, description="generated coloured stripes; options classes, per_class, test, size, seed")
