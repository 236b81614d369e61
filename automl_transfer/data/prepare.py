"""Decoding a dataset once into tensors of one size, with a validation split when it has none.

:func:`prepare_data` checks a loaded dataset, decodes every image exactly once into ``uint8``
tensors (reading them back from the run dir's cache when another trial, worker or resume
already did) and splits off a stratified validation set when the dataset has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from automl_transfer.contract.components import ImageDataset
from automl_transfer.data.ahead import DecodingAhead
from automl_transfer.data.cache import cache_key, cache_path, read_cache, write_cache
from automl_transfer.data.datasets import (
    SPLITS,
    check_dataset,
    dataset_fingerprint,
    dataset_splits,
)
from automl_transfer.data.images import INTERPOLATIONS, decode_images
from automl_transfer.data.memory import check_memory
from automl_transfer.errors import DatasetError

logger = logging.getLogger(__name__)


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
    :param val: the validation images trials are scored on (``None`` only in the data of a
        refit, which trains on every labelled image).
    :param test: held-out test images, or ``None`` when the dataset has none.
    :param n_skipped: unreadable images left out (only with ``skip_bad_images=True``).
    :param fingerprint: :func:`dataset_fingerprint` of the dataset the tensors came from.
    :param key: a hash of everything the tensors depend on (dataset, size, interpolation,
        validation split): equal keys, equal tensors. Caches of what is computed from them
        (the features of a frozen backbone) are keyed by it.
    :param file_digests: the SHA-256 of every image file read while decoding, by absolute
        path, for :func:`dataset_fingerprint` with ``content``; ``None`` when the tensors came
        from the cache and no file was read.
    """

    class_names: list[str]
    train: LabelledTensors
    val: LabelledTensors | None
    test: LabelledTensors | None
    n_skipped: int
    fingerprint: str
    key: str = ""
    file_digests: dict[str, str] | None = None


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


def _decode_splits(dataset: ImageDataset, image_size: int, interpolation: str, skip_bad_images: bool,
                   progress: Callable[[int, int], None] | None,
                   digests: dict[str, str]) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    """Decode each split with :func:`decode_images` (after :func:`check_memory`), reporting
    ``progress(done, total)`` over all of them and filling ``digests`` with the files' SHA-256."""
    splits = dataset_splits(dataset)
    total = sum(len(items) for items in splits.values())
    check_memory(total, image_size, dataset.origin or "dataset")
    decoded, offset = {}, 0
    if progress is not None:
        progress(0, total)
    for name, items in splits.items():
        on_decoded = None if progress is None else (lambda done, base=offset: progress(base + done, total))
        decoded[name] = decode_images(items, image_size, interpolation, skip_bad_images, on_decoded, digests)
        offset += len(items)
    return decoded


def _split_tensors(decoded: dict[str, tuple[torch.Tensor, torch.Tensor, int]], dataset: ImageDataset, n_skipped: int,
                   val_fraction: float, seed: int) -> dict[str, LabelledTensors | None]:
    """The decoded splits by name (``None`` where absent), validation held out with :func:`_hold_out` when missing.

    :raises DatasetError: skipping left a class without training images; no readable validation or test image.
    """
    origin = dataset.origin or "dataset"
    tensors = {name: LabelledTensors(*decoded[name][:2]) if name in decoded else None for name in SPLITS}
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
    return tensors


def prepare_data(dataset: ImageDataset, image_size: int, *, interpolation: str = "bilinear",
                 val_fraction: float = 0.2, seed: int = 0, skip_bad_images: bool = False,
                 cache_dir: Path | None = None, fingerprint: str | None = None,
                 progress: Callable[[int, int], None] | None = None, ahead: DecodingAhead | None = None) -> PreparedData:
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
    :param fingerprint: the dataset's :func:`dataset_fingerprint` when the caller already
        has it (it stats every file); computed here otherwise.
    :param progress: ``progress(done, total)`` before the first image and after each (all splits; not from the cache).
    :param ahead: a child process decoding the dataset since before this call: its images are
        taken when they are the ones wanted (:meth:`DecodingAhead.take`) instead of decoding;
        it is closed either way.
    :returns: the :class:`PreparedData`.
    :raises DatasetError: naming the file or class at fault: the checks of
        :func:`check_dataset`, a missing or unreadable image (unless skipped), a class left
        without training images by skipping, or no validation images; or decoded images that
        would not fit in memory (:func:`check_memory`).
    :raises ValueError: for an unknown interpolation or a ``val_fraction`` outside ``(0, 1)``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    check_dataset(dataset)
    origin = dataset.origin or "dataset"
    fingerprint = fingerprint or dataset_fingerprint(dataset)
    split_settings = {"val_fraction": val_fraction, "seed": seed} if dataset.val is None else {}
    key = {"fingerprint": fingerprint, "image_size": image_size, "interpolation": interpolation,
           "skip_bad_images": skip_bad_images, **split_settings}
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    cached = read_cache(path) if path is not None else None
    if cached is not None:
        if ahead is not None:
            ahead.close()
        logger.info("read decoded images of %s from %s", origin, path)
        splits, info = cached
        tensors = {name: LabelledTensors(*pair) if pair is not None else None for name, pair in splits.items()}
        return PreparedData(list(dataset.class_names), tensors["train"], tensors["val"], tensors["test"],
                            info["n_skipped"], fingerprint, cache_key(key))
    digests: dict[str, str] = {}
    decoded = ahead.take(fingerprint, image_size, interpolation, skip_bad_images, progress, digests) if ahead else None
    if decoded is None:
        decoded = _decode_splits(dataset, image_size, interpolation, skip_bad_images, progress, digests)
    n_skipped = sum(skipped for *_, skipped in decoded.values())
    tensors = _split_tensors(decoded, dataset, n_skipped, val_fraction, seed)
    if path is not None:
        _write_quietly(path, tensors, {"class_names": list(dataset.class_names), "n_skipped": n_skipped})
    return PreparedData(list(dataset.class_names), tensors["train"], tensors["val"], tensors["test"],
                        n_skipped, fingerprint, cache_key(key), digests)


def _write_quietly(path: Path, tensors: dict[str, LabelledTensors | None], info: dict) -> None:
    """Write decoded splits to the cache; a disk that refuses is logged (they are decoded again next time)."""
    try:
        write_cache(path, {name: (t.images, t.labels) if t is not None else None for name, t in tensors.items()}, info)
    except OSError as error:
        logger.warning("cannot write the image cache %s: %s", path, error)
