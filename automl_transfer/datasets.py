"""Loading datasets through their plugins and preparing them as tensors, once, before training.

A dataset is written ``PLUGIN[:LOCATION]`` (``imagefolder:data/pets``, ``csv:labels.csv``,
``digits``, ``synthetic:classes=4``). :func:`load_dataset` hands ``LOCATION`` to the plugin's
loader; :func:`prepare_data` checks the result, decodes every image exactly once into
``uint8`` tensors of one size and splits off a stratified validation set when the dataset has
none. Everything that can be wrong with a dataset is reported here, as a
:class:`~automl_transfer.errors.DatasetError` naming the file or folder, before a trial starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from automl_transfer.components import ImageDataset, ImageItem
from automl_transfer.errors import DatasetError, PluginError
from automl_transfer.image_cache import cache_path, read_cache, write_cache
from automl_transfer.images import INTERPOLATIONS, decode_images, read_image, resize_to_tensor
from automl_transfer.plugins import get_component

__all__ = [
    "LabelledTensors",
    "PreparedData",
    "check_dataset",
    "dataset_fingerprint",
    "load_dataset",
    "parse_options",
    "positive_int",
    "prepare_data",
    "read_image",
    "resize_to_tensor",
    "split_spec",
    "stratified_split",
]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")


@dataclass
class LabelledTensors:
    """Decoded images with their labels, on the CPU.

    :param images: ``uint8`` tensor ``(N, 3, S, S)``.
    :param labels: ``int64`` tensor ``(N,)`` of class indices.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class PreparedData:
    """A dataset ready for training: every split decoded to tensors of one size.

    :param class_names: label ``i`` is ``class_names[i]``.
    :param train: the images to train on.
    :param val: the validation images trials are scored on.
    :param test: held-out test images, or ``None`` when the dataset has none.
    :param n_skipped: unreadable images left out (only with ``skip_bad_images=True``).
    :param fingerprint: :func:`dataset_fingerprint` of the dataset the tensors came from.
    """

    class_names: list[str]
    train: LabelledTensors
    val: LabelledTensors
    test: LabelledTensors | None
    n_skipped: int
    fingerprint: str


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"PLUGIN[:LOCATION]"`` into the plugin name and the location (``None`` when absent).

    :raises DatasetError: when the plugin name is empty.
    """
    name, _, location = spec.partition(":")
    if not name.strip():
        raise DatasetError(f"dataset {spec!r} names no plugin; write PLUGIN[:LOCATION], e.g. imagefolder:data/pets")
    return name.strip(), location or None


def load_dataset(spec: str) -> ImageDataset:
    """Load the dataset written ``PLUGIN[:LOCATION]`` through the plugin that registers ``PLUGIN``.

    :param spec: e.g. ``"imagefolder:data/pets"``, ``"csv:labels.csv"``, ``"digits"``.
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
    check_dataset(dataset)
    return dataset


def positive_int(text: str) -> int:
    """Convert option text to an integer of at least 1; :class:`ValueError` otherwise."""
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def parse_options(location: str | None, options: dict[str, Callable[[str], Any]], plugin: str) -> dict[str, Any]:
    """Parse a dataset location written ``key=value,key=value``.

    A piece without ``=`` continues the previous value, so a value may hold commas:
    ``classes=0,2,4,per_class=10`` gives ``classes="0,2,4"`` and ``per_class="10"``.

    :param location: the text after ``PLUGIN:``, or ``None`` for no options.
    :param options: each valid key mapped to a converter from text (``int``, :func:`positive_int`
        ...) that raises ``ValueError`` for a bad value.
    :param plugin: the plugin name, for messages.
    :returns: the converted values of the keys given (defaults are the caller's business).
    :raises DatasetError: for an unknown key (listing the valid ones), a repeated key, a
        piece before the first key, or a value its converter rejects.
    """
    raw: dict[str, str] = {}
    key = None
    for piece in (location or "").split(","):
        if "=" in piece:
            key, _, value = piece.partition("=")
            key = key.strip()
            if key not in options:
                valid = ", ".join(sorted(options))
                raise DatasetError(f"{plugin}: unknown option {key!r}; valid options are {valid}")
            if key in raw:
                raise DatasetError(f"{plugin}: option {key!r} is given twice")
            raw[key] = value.strip()
        elif key is not None:
            raw[key] += "," + piece.strip()
        elif piece.strip():
            raise DatasetError(f"{plugin}: expected key=value options, got {piece!r}; e.g. {plugin}:seed=0")
    parsed = {}
    for key, value in raw.items():
        try:
            parsed[key] = options[key](value)
        except ValueError as error:
            raise DatasetError(f"{plugin}: option {key}={value!r} is not valid: {error}") from None
    return parsed


def _splits(dataset: ImageDataset) -> dict[str, Sequence[tuple[ImageItem, int]]]:
    return {name: getattr(dataset, name) for name in _SPLITS if getattr(dataset, name) is not None}


def check_dataset(dataset: ImageDataset) -> None:
    """Check what can be checked without decoding: classes, labels and non-empty splits.

    :raises DatasetError: for fewer than 2 classes, a repeated class name, a label out of
        range, a class without training images, or an empty validation or test set.
    """
    origin = dataset.origin or "dataset"
    names = list(dataset.class_names)
    if len(names) < 2:
        raise DatasetError(
            f"{origin}: found {len(names)} class(es) {names}; a classifier needs at least 2 classes"
        )
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise DatasetError(f"{origin}: class names {repeated} appear more than once")
    for split, items in _splits(dataset).items():
        if len(items) == 0:
            raise DatasetError(f"{origin}: the {split} set is empty")
        for item, label in items:
            if not (isinstance(label, (int, np.integer)) and 0 <= label < len(names)):
                raise DatasetError(f"{origin}: {item!r} in the {split} set has label {label!r}, not 0..{len(names) - 1}")
    counts = np.bincount([label for _, label in dataset.train], minlength=len(names))
    empty = [names[index] for index in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(f"{origin}: class(es) {empty} have no training images; add images or remove the class")


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """Return a stable SHA-256 hex digest identifying the dataset's content, without decoding.

    It covers the class names, each split's items and labels in order, and for an image file
    its path relative to the folder holding all the files, its size and modification time;
    for an image in memory, its mode, size and pixel bytes. Moving the dataset folder keeps
    the fingerprint; editing, adding or removing a file changes it.

    :raises DatasetError: naming a file that does not exist.
    """
    splits = _splits(dataset)
    folders = {os.path.dirname(os.path.abspath(item)) for items in splits.values() for item, _ in items
               if not isinstance(item, Image.Image)}
    root = os.path.commonpath(sorted(folders)) if folders else ""
    digest = hashlib.sha256(json.dumps(list(dataset.class_names)).encode())
    for split, items in splits.items():
        digest.update(f"\n[{split} {len(items)}]\n".encode())
        for item, label in items:
            if isinstance(item, Image.Image):
                digest.update(f"{label} memory {item.mode} {item.size}\n".encode())
                digest.update(item.tobytes())
                continue
            path = os.path.abspath(item)
            try:
                stat = os.stat(path)
            except OSError as error:
                raise DatasetError(f"cannot read image {path}: {error.strerror}") from None
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            digest.update(f"{label} file {relative} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of ``labels`` into train and validation indices, class by class.

    Each class with ``n >= 2`` images puts ``round(n * val_fraction)`` of them, at least 1 and
    at most ``n - 1``, into validation, chosen by a generator seeded with ``(seed, class)``. A
    class with a single image keeps it for training and has no validation image.

    :returns: ``(train_indices, val_indices)``, each sorted ascending.
    """
    train_parts, val_parts = [], []
    label_array = labels.numpy()
    for label in np.unique(label_array):
        indices = np.flatnonzero(label_array == label)
        n_val = 0 if len(indices) < 2 else min(len(indices) - 1, max(1, round(len(indices) * val_fraction)))
        shuffled = np.random.default_rng([seed, int(label)]).permutation(indices)
        val_parts.append(shuffled[:n_val])
        train_parts.append(shuffled[n_val:])
    return (torch.from_numpy(np.sort(np.concatenate(train_parts))),
            torch.from_numpy(np.sort(np.concatenate(val_parts))))


def _hold_out(train: LabelledTensors, class_names: list[str], val_fraction: float, seed: int,
              origin: str) -> tuple[LabelledTensors, LabelledTensors]:
    """Split ``train`` with :func:`stratified_split`; warn about classes left without validation."""
    train_indices, val_indices = stratified_split(train.labels, val_fraction, seed)
    counts = torch.bincount(train.labels, minlength=len(class_names))
    singles = [class_names[index] for index in torch.nonzero(counts == 1).flatten().tolist()]
    if len(val_indices) == 0:
        raise DatasetError(f"{origin}: every class has a single image, so none can be held out for "
                           "validation; add images or give a separate validation set")
    if singles:
        logger.warning("%s: class(es) %s have a single image, kept for training; they get no validation image",
                       origin, singles)
    return (LabelledTensors(train.images[train_indices], train.labels[train_indices]),
            LabelledTensors(train.images[val_indices], train.labels[val_indices]))


def prepare_data(dataset: ImageDataset, image_size: int, *, interpolation: str = "bilinear",
                 val_fraction: float = 0.2, seed: int = 0, skip_bad_images: bool = False,
                 cache_dir: Path | None = None) -> PreparedData:
    """Check ``dataset`` and decode every image once into ``uint8`` tensors ``(3, S, S)``.

    Each image is read with :func:`read_image` and sized with :func:`resize_to_tensor`
    (shorter side to ``image_size``, centre crop). When the dataset has no validation set,
    :func:`stratified_split` holds out ``val_fraction`` of each class, seeded by ``seed``.

    :param dataset: a dataset from :func:`load_dataset` or a plugin loader.
    :param image_size: the side ``S`` of the square images.
    :param interpolation: a name from :data:`automl_transfer.images.INTERPOLATIONS`.
    :param val_fraction: the share of each class held out when ``dataset.val`` is ``None``.
    :param seed: seeds that split.
    :param skip_bad_images: leave out unreadable images, counting them in ``n_skipped``,
        instead of failing on the first one.
    :param cache_dir: when given, the tensors are stored there as a safetensors file keyed by
        the dataset fingerprint and every setting above, and read back on the next call with
        the same key instead of decoding again.
    :returns: the :class:`PreparedData`.
    :raises DatasetError: naming the file or class at fault: the checks of
        :func:`check_dataset`, a missing or unreadable image (unless skipped), a class left
        without training images by skipping, or no validation images.
    :raises ValueError: for an unknown interpolation or a ``val_fraction`` outside ``(0, 1)``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    check_dataset(dataset)
    origin = dataset.origin or "dataset"
    fingerprint = dataset_fingerprint(dataset)
    split_settings = {"val_fraction": val_fraction, "seed": seed} if dataset.val is None else {}
    key = {"fingerprint": fingerprint, "image_size": image_size, "interpolation": interpolation,
           "skip_bad_images": skip_bad_images, **split_settings}
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    cached = read_cache(path) if path is not None else None
    if cached is not None:
        splits, info = cached
        logger.info("read decoded images of %s from %s", origin, path)
        tensors = {name: LabelledTensors(*pair) if pair is not None else None for name, pair in splits.items()}
        return PreparedData(list(dataset.class_names), tensors["train"], tensors["val"], tensors["test"],
                            info["n_skipped"], fingerprint)

    decoded = {name: decode_images(items, image_size, interpolation, skip_bad_images)
               for name, items in _splits(dataset).items()}
    n_skipped = sum(skipped for *_, skipped in decoded.values())
    tensors = {name: LabelledTensors(*decoded[name][:2]) if name in decoded else None for name in _SPLITS}
    counts = torch.bincount(tensors["train"].labels, minlength=len(dataset.class_names))
    emptied = [dataset.class_names[index] for index in torch.nonzero(counts == 0).flatten().tolist()]
    if emptied:
        raise DatasetError(f"{origin}: after skipping {n_skipped} unreadable image(s), class(es) {emptied} "
                           "have no training images left")
    if tensors["val"] is None:
        tensors["train"], tensors["val"] = _hold_out(tensors["train"], dataset.class_names, val_fraction, seed, origin)
    for name in ("val", "test"):
        if tensors[name] is not None and len(tensors[name]) == 0:
            raise DatasetError(f"{origin}: no readable {name} images; add images to the {name} set")
    if path is not None:
        try:
            write_cache(path, {name: (t.images, t.labels) if t is not None else None for name, t in tensors.items()},
                        {"class_names": list(dataset.class_names), "n_skipped": n_skipped})
        except OSError as error:
            logger.warning("cannot write the image cache %s: %s", path, error)
    return PreparedData(list(dataset.class_names), tensors["train"], tensors["val"], tensors["test"],
                        n_skipped, fingerprint)
