"""The run dir's cache: decoded images, and the pooled features of frozen backbones.

Parallel search workers and resumed runs read a cache file instead of decoding every image
(or running every image through a frozen backbone) again. A file is keyed by a hash of
everything its tensors depend on, written to a temporary name and moved into place with
``os.replace``, so a reader never sees half a file and two workers writing at once leave one
whole file. A file that cannot be read is ignored (and rewritten), never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from automl_transfer.data.datasets import SPLITS

#: Bumped whenever the preprocessing or the file layout changes, so old files are not reused.
CACHE_FORMAT = "automl_transfer-images-1"

logger = logging.getLogger(__name__)


def cache_key(key: dict[str, Any]) -> str:
    """Return a 32-hex-digit hash of ``key``, a JSON-ready dict of everything some tensors depend on."""
    text = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(cache_dir: Path, key: dict[str, Any], kind: str = "images") -> Path:
    """Return the cache file of ``kind`` (``images``, ``features``) for ``key``.

    :param cache_dir: the folder holding cache files.
    :param key: the dataset fingerprint and every setting the tensors depend on.
    :returns: ``cache_dir / "<kind>-<hash of key>.safetensors"``.
    """
    return Path(cache_dir) / f"{kind}-{cache_key(key)}.safetensors"


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write named tensors and JSON-ready ``info`` to ``path`` atomically.

    :raises OSError: when the folder cannot be written (a full disk, say); nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(handle)
    try:
        contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
        save_file(contiguous, temporary, metadata={"format": CACHE_FORMAT, "info": json.dumps(info)})
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read a file written by :func:`write_tensors`.

    :returns: ``(tensors, info)``, or ``None`` when the file is absent, unreadable or from
        another cache format (the caller then computes the tensors again).
    """
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as stored:
            metadata = stored.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                return None
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
        return tensors, json.loads(metadata["info"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None


def write_cache(path: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor] | None], info: dict[str, Any]) -> None:
    """Write decoded splits to ``path`` atomically.

    :param path: the target file, from :func:`cache_path`; its folder is created.
    :param splits: ``{"train": (images, labels), "val": ..., "test": ... or None}``.
    :param info: JSON-ready facts stored in the file's metadata (class names, skipped count).
    :raises OSError: when the folder cannot be written.
    """
    tensors = {}
    for split, pair in splits.items():
        if pair is not None:
            tensors[f"{split}.images"], tensors[f"{split}.labels"] = pair
    write_tensors(path, tensors, info)


def read_cache(path: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor] | None], dict[str, Any]] | None:
    """Read a file written by :func:`write_cache`.

    :returns: ``(splits, info)`` as they were written, or ``None`` (see :func:`read_tensors`).
    """
    stored = read_tensors(path)
    if stored is None:
        return None
    tensors, info = stored
    splits = {
        split: (tensors[f"{split}.images"], tensors[f"{split}.labels"]) if f"{split}.images" in tensors else None
        for split in SPLITS
    }
    return splits, info


class FeatureStore:
    """The pooled features one frozen backbone gives every image of one prepared dataset.

    A trial that freezes its whole backbone and does not augment trains its head on these;
    every such trial of the same source, and the ranking of sources, reads them back instead
    of running the backbone again.

    :param cache_dir: the run dir's cache folder.
    :param key: what the features depend on: the prepared data's key, the source, its weights.
    """

    def __init__(self, cache_dir: Path, key: dict[str, Any]):
        self.path = cache_path(cache_dir, key, kind="features")

    def read(self) -> dict[str, torch.Tensor] | None:
        """Return the stored features by split (``train``, ``val``), or ``None`` when there are none yet."""
        stored = read_tensors(self.path)
        return None if stored is None else stored[0]

    def write(self, features: dict[str, torch.Tensor]) -> None:
        """Store ``features`` by split; a disk that refuses is logged, not raised (they are computed again)."""
        try:
            write_tensors(self.path, features, {"splits": sorted(features)})
        except OSError as error:
            logger.warning("cannot write the feature cache %s: %s", self.path, error)
