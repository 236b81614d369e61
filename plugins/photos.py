"""The ``photos`` dataset: crops of ten colour photographs that ship with scikit-learn and scikit-image.

A few-shot task on natural RGB images that needs no download: each class is one photograph
(a Chinese palace, a flower, an astronaut, a cat, a cup of coffee, the Hubble deep field, a
stained tissue sample, a motorcycle, a retina, a rocket) and an image is a square crop of it,
resized. Which photograph a crop comes from is told by its textures, colours and object parts,
which is what ImageNet features describe. Training and test crops never share a pixel:

``split=cells`` (default)
    each photograph is cut into a 4 x 4 grid; training crops lie inside the cells of one colour
    of a checkerboard, test crops inside the others.
``split=halves``
    training crops come from the left half of each photograph, test crops from the right half:
    a harder task, with other content at test time.

The location holds options written ``key=value,key=value``: ``per_class`` labelled crops per
photograph (default 10), ``test_per_class`` held-out crops per photograph (default 40),
``size`` in pixels (default 64), ``seed`` (default 0) and ``split``. The same options always
give the same crops. scikit-image comes with ``pip install 'automl-transfer[imagenet]'``.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from automl_transfer.plugin import (
    DatasetError,
    ImageDataset,
    hookimpl,
    parse_options,
    positive_int,
)

#: The class names, each with the scikit-image function (or scikit-learn file) of its photograph.
PHOTOS = {
    "palace": "sklearn:china.jpg",
    "flower": "sklearn:flower.jpg",
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "galaxies": "hubble_deep_field",
    "tissue": "immunohistochemistry",
    "motorcycle": "stereo_motorcycle",
    "retina": "retina",
    "rocket": "rocket",
}
SPLITS = ("cells", "halves")
#: The grid of ``split=cells``.
GRID = 4


def _split(text: str) -> str:
    if text not in SPLITS:
        raise ValueError(f"choose one of {', '.join(SPLITS)}")
    return text


OPTIONS = {"per_class": positive_int, "test_per_class": positive_int, "size": positive_int, "seed": int, "split": _split}


@hookimpl
def register_datasets(register):
    """Register the ``photos`` dataset."""
    register("photos", load, description="crops of 10 colour photographs bundled with scikit-learn and scikit-image")


def load(location: str | None) -> ImageDataset:
    """Make the crops the options in ``location`` describe (see this module's docstring).

    :returns: in-memory RGB crops, ``per_class`` training and ``test_per_class`` test crops per photograph.
    :raises DatasetError: an unknown option or bad value, a size under 16 pixels, or scikit-image missing.
    """
    options = parse_options(location, OPTIONS, "photos")
    size = options.get("size", 64)
    if size < 16:
        raise DatasetError(f"photos: size must be at least 16 pixels, not {size}")
    split = options.get("split", "cells")
    rng = np.random.default_rng(options.get("seed", 0))
    train, test = [], []
    for label, photo in enumerate(_photos()):
        regions = _regions(photo.shape[0], photo.shape[1], split)
        train += [(_crop(photo, regions[0], size, rng), label) for _ in range(options.get("per_class", 10))]
        test += [(_crop(photo, regions[1], size, rng), label) for _ in range(options.get("test_per_class", 40))]
    return ImageDataset(class_names=list(PHOTOS), train=train, test=test, origin=f"photos:{location or ''}")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The ten photographs as ``(H, W, 3)`` uint8 arrays, in :data:`PHOTOS` order."""
    try:
        from skimage import data
    except ImportError:
        raise DatasetError(
            "the photos dataset needs scikit-image's bundled photographs: pip install 'automl-transfer[imagenet]'"
        ) from None
    from sklearn.datasets import load_sample_image

    photos = []
    for source in PHOTOS.values():
        if source.startswith("sklearn:"):
            pixels = load_sample_image(source.removeprefix("sklearn:"))
        else:
            pixels = getattr(data, source)()
            pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        photos.append(np.ascontiguousarray(pixels[..., :3]))
    return tuple(photos)


def _regions(height: int, width: int, split: str) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """The training and the test regions ``(top, left, bottom, right)`` of a photograph."""
    if split == "halves":
        return [(0, 0, height, width // 2)], [(0, width // 2, height, width)]
    cells = [
        ((row * height) // GRID, (col * width) // GRID, ((row + 1) * height) // GRID, ((col + 1) * width) // GRID, row + col)
        for row in range(GRID)
        for col in range(GRID)
    ]
    return [cell[:4] for cell in cells if cell[4] % 2 == 0], [cell[:4] for cell in cells if cell[4] % 2 == 1]


def _crop(photo: np.ndarray, regions: list[tuple[int, int, int, int]], size: int, rng: np.random.Generator) -> Image.Image:
    """A random square crop inside one of ``regions``, a half to all of its shorter side, resized to ``size``."""
    top, left, bottom, right = regions[rng.integers(len(regions))]
    shorter = min(bottom - top, right - left)
    side = int(rng.integers(shorter // 2, shorter + 1))
    row = top + int(rng.integers(0, bottom - top - side + 1))
    col = left + int(rng.integers(0, right - left - side + 1))
    crop = Image.fromarray(photo[row : row + side, col : col + side])
    return crop.resize((size, size), Image.Resampling.BICUBIC)
