"""Loading datasets through their plugins and checking them, before anything is decoded.

A dataset is written ``PLUGIN[:LOCATION]`` (``imagefolder:data/pets``, ``csv:labels.csv``,
``digits``, ``synthetic:classes=4``). :func:`load_dataset` hands ``LOCATION`` to the plugin's
loader and checks what comes back; :func:`dataset_fingerprint` identifies its content without
decoding. Decoding is :mod:`automl_transfer.data.prepare`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from automl_transfer.contract.class_names import name_problem
from automl_transfer.contract.components import ImageDataset, ImageItem
from automl_transfer.errors import DatasetError, PluginError
from automl_transfer.registry import get_component

#: The splits a dataset may have, in order.
SPLITS = ("train", "val", "test")

def split_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"PLUGIN[:LOCATION]"`` into the plugin name and the location (``None`` when absent).

    :raises DatasetError: when the plugin name is empty.
    """
    name, _, location = spec.partition(":")
    if not name.strip():
        raise DatasetError(f"dataset {spec!r} names no plugin; write PLUGIN[:LOCATION], e.g. imagefolder:data/pets")
    return name.strip(), location or None


def load_dataset(spec: str, min_classes: int = 2) -> ImageDataset:
    """Load the dataset written ``PLUGIN[:LOCATION]`` through the plugin that registers ``PLUGIN``.

    :param spec: e.g. ``"imagefolder:data/pets"``, ``"csv:labels.csv"``, ``"digits"``.
    :param min_classes: as for :func:`check_dataset`.
    :returns: the plugin's :class:`ImageDataset`, its ``origin`` set to ``spec`` when empty,
        checked with :func:`check_dataset` (images are not decoded yet).
    :raises UnknownComponentError: when no loaded plugin registers the dataset name.
    :raises DatasetError: when the location is unusable or the dataset fails the checks.
    :raises PluginError: when the loader returns something other than an ``ImageDataset``.
    """
    name, location = split_spec(spec)
    component = get_component("dataset", name)
    dataset = component.build(location)
    if not isinstance(dataset, ImageDataset):
        raise PluginError(
            f"dataset loader {name!r} of plugin {component.plugin!r} returned "
            f"{type(dataset).__name__}, not an ImageDataset; report this to the plugin's authors"
        )
    dataset.origin = dataset.origin or spec
    check_dataset(dataset, min_classes)
    return dataset

def read_dataset(spec: str, min_classes: int = 2) -> ImageDataset:
    """Load a dataset as :func:`load_dataset` does, turning file-system errors into a :class:`DatasetError`.

    :raises DatasetError: also when a folder or file of the dataset cannot be read (permissions).
    :raises UnknownComponentError: when no loaded plugin registers the dataset name.
    :raises PluginError: when the loader returns something other than an ``ImageDataset``.
    """
    try:
        return load_dataset(spec, min_classes)
    except OSError as error:
        raise DatasetError(
            f"cannot read dataset {spec}: {error.strerror or error} ({error.filename}); check the path and its permissions"
        ) from error


def dataset_splits(dataset: ImageDataset) -> dict[str, Sequence[tuple[ImageItem, int]]]:
    """Return the dataset's splits that are present, by name (``train`` always)."""
    return {name: getattr(dataset, name) for name in SPLITS if getattr(dataset, name) is not None}


def check_dataset(dataset: ImageDataset, min_classes: int = 2) -> None:
    """Check what can be checked without decoding: classes, labels and non-empty splits.

    :param min_classes: the fewest classes the dataset may have: 2 to train a classifier, 1 to
        score one (a batch of one kind of item).
    :raises DatasetError: for fewer than ``min_classes`` classes, an empty or blank or repeated
        class name, a label out of range, a class without training images, or an empty
        validation or test set.
    """
    origin = dataset.origin or "dataset"
    names = list(dataset.class_names)
    if len(names) < min_classes:
        found = f"only {names}" if names else "none"
        needs = "training a classifier needs at least 2 classes" if min_classes == 2 else "it needs a class"
        raise DatasetError(f"{origin}: {needs} (found {found})")
    blank = [name for name in names if name_problem(name)]
    if blank:
        raise DatasetError(f"{origin}: class names {blank} are empty or blank; give every class a visible name")
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise DatasetError(f"{origin}: class names {repeated} appear more than once")
    for split, items in dataset_splits(dataset).items():
        if len(items) == 0:
            raise DatasetError(f"{origin}: the {split} set is empty")
        for item, label in items:
            if not (isinstance(label, (int, np.integer)) and 0 <= label < len(names)):
                raise DatasetError(f"{origin}: {item!r} in the {split} set has label {label!r}, not 0..{len(names) - 1}")
    counts = np.bincount([label for _, label in dataset.train], minlength=len(names))
    empty = [names[index] for index in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(f"{origin}: class(es) {empty} have no training images; add images or remove the class")


def dataset_fingerprint(dataset: ImageDataset, content: bool = False, digests: Mapping[str, str] | None = None) -> str:
    """Return a stable SHA-256 hex digest identifying the dataset's content.

    It covers the class names, each split's items and labels in order, and for an image file
    its path relative to the folder holding all the files and, by default, its size and
    modification time (nothing is read); for an image in memory, its mode, size and pixel
    bytes. Moving the dataset folder keeps the fingerprint; editing, adding or removing a file
    changes it.

    :param content: identify each file by a hash of its bytes instead of its size and time:
        slower (every file is read), but a file touched or copied without a change keeps it.
    :param digests: with ``content``, the SHA-256 hex digests of files already read, by
        absolute path (:attr:`PreparedData.file_digests
        <automl_transfer.data.prepare.PreparedData.file_digests>`): those are not read again.
    :raises DatasetError: naming a file that does not exist or cannot be read.
    """
    splits = {split: [(item if isinstance(item, Image.Image) else os.path.abspath(item), label)
                      for item, label in items] for split, items in dataset_splits(dataset).items()}
    folders = {os.path.dirname(item) for items in splits.values() for item, _ in items if isinstance(item, str)}
    root = os.path.commonpath(sorted(folders)) if folders else ""
    prefix = root.rstrip(os.sep) + os.sep  # every absolute path starts with it
    digest = hashlib.sha256(json.dumps(list(dataset.class_names)).encode())
    for split, items in splits.items():
        digest.update(f"\n[{split} {len(items)}]\n".encode())
        for item, label in items:
            if isinstance(item, Image.Image):
                digest.update(f"{label} memory {item.mode} {item.size}\n".encode())
                digest.update(item.tobytes())
                continue
            relative = item[len(prefix):].replace(os.sep, "/")
            identity = digests.get(item) if content and digests else None
            line = f"{label} file {relative} {identity or _file_identity(item, content)}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))  # a name that is not UTF-8: by its bytes
    return digest.hexdigest()


def _file_identity(path: str, content: bool) -> str:
    """``"<size> <mtime ns>"``, or with ``content`` the SHA-256 of the file's bytes.

    :raises DatasetError: the file does not exist or cannot be read.
    """
    try:
        if content:
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                while block := file.read(1 << 20):
                    digest.update(block)
            return digest.hexdigest()
        stat = os.stat(path)
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error.strerror}") from None
    return f"{stat.st_size} {stat.st_mtime_ns}"
