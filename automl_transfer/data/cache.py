"""A cache of decoded dataset tensors, one safetensors file per dataset and preprocessing.

Parallel search workers and resumed runs read the file instead of decoding every image
again. A file is written to a temporary name and moved into place with ``os.replace``, so a
reader never sees half a file, and two workers writing at once leave one whole file.
"""

from __future__ import annotations

import hashlib
import json
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


def cache_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    """Return the cache file for ``key``, a JSON-ready dict of everything the tensors depend on.

    :param cache_dir: the folder holding cache files.
    :param key: the dataset fingerprint and every preprocessing setting.
    :returns: ``cache_dir / "<hash of key>.safetensors"``.
    """
    text = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
    return Path(cache_dir) / f"images-{hashlib.sha256(text.encode()).hexdigest()[:32]}.safetensors"


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
            tensors[f"{split}.images"] = pair[0].contiguous()
            tensors[f"{split}.labels"] = pair[1].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"format": CACHE_FORMAT, "info": json.dumps(info)})
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_cache(path: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor] | None], dict[str, Any]] | None:
    """Read a file written by :func:`write_cache`.

    :param path: the cache file.
    :returns: ``(splits, info)`` as they were written, or ``None`` when the file is absent,
        unreadable or from another cache format (the caller then decodes again).
    """
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as stored:
            metadata = stored.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                return None
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    except (OSError, SafetensorError):
        return None
    splits = {
        split: (tensors[f"{split}.images"], tensors[f"{split}.labels"]) if f"{split}.images" in tensors else None
        for split in SPLITS
    }
    return splits, json.loads(metadata["info"])
