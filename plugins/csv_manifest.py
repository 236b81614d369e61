"""The ``csv`` dataset: a manifest listing each image with its label.

``csv:data/labels.csv`` reads a CSV file (UTF-8, an optional byte-order mark) whose header
has a ``path`` and a ``label`` column and optionally a ``split`` column; other columns are
ignored::

    path,label,split
    images/001.jpg,cat,train
    images/002.jpg,dog,val
    images/003.jpg,dog,test

Relative paths are relative to the folder holding the CSV file. ``split`` is ``train`` (also
when empty), ``val`` (or ``valid``/``validation``) or ``test``; without ``val`` rows the core
splits a validation set off the training rows. The classes are the labels of the training
rows, sorted (numerically when every label is an integer).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from automl_transfer.plugin import DatasetError, ImageDataset, hookimpl

#: Values of the ``split`` column (lower case) and the split each one means.
SPLIT_NAMES = {"": "train", "train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def _read_rows(manifest: Path) -> list[tuple[int, Path, str, str]]:
    """Return ``(line, image path, label, split)`` for every data row of the manifest."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip().lower() for name in reader.fieldnames or []]
            missing = [name for name in ("path", "label") if name not in columns]
            if missing:
                raise DatasetError(
                    f"{manifest} needs a header row with columns path,label (optionally split); missing {missing}"
                )
            reader.fieldnames = columns
            rows = []
            for record in reader:
                line = reader.line_num
                path_text = (record.get("path") or "").strip()
                label = (record.get("label") or "").strip()
                split_text = (record.get("split") or "").strip().lower()
                if not path_text and not label:
                    continue
                if not path_text or not label:
                    raise DatasetError(f"{manifest} line {line}: every row needs both a path and a label")
                if split_text not in SPLIT_NAMES:
                    raise DatasetError(f"{manifest} line {line}: split {split_text!r} is not train, val or test")
                rows.append((line, manifest.parent / os.path.expanduser(path_text), label, SPLIT_NAMES[split_text]))
    except UnicodeDecodeError as error:
        raise DatasetError(f"{manifest} is not UTF-8 text ({error.reason}); save it as UTF-8") from None
    except csv.Error as error:
        raise DatasetError(f"{manifest} is not a valid CSV file: {error}") from None
    return rows


def load(location: str | None) -> ImageDataset:
    """Load the images listed in the CSV manifest at ``location``.

    :param location: the CSV file, in the format of this module's docstring.
    :returns: an :class:`ImageDataset` of image paths; ``val``/``test`` set when rows ask for them.
    :raises DatasetError: naming the file and line: a missing manifest or header column, a
        row without path or label, an unknown split, a row whose image does not exist, or a
        val/test label that no training row has.
    """
    if not location:
        raise DatasetError("csv needs a manifest file: write csv:path/to/labels.csv")
    manifest = Path(os.path.expanduser(location))
    if not manifest.is_file():
        raise DatasetError(f"manifest {manifest} {'is not a file' if manifest.exists() else 'does not exist'}")
    rows = _read_rows(manifest)
    missing = [(line, path) for line, path, _, _ in rows if not path.is_file()]
    if missing:
        line, path = missing[0]
        more = f"; {len(missing) - 1} more row(s) name missing images" if len(missing) > 1 else ""
        raise DatasetError(f"{manifest} line {line}: image {path} does not exist{more}")
    class_names = _sorted_labels({label for _, _, label, split in rows if split == "train"})
    label_indices = {label: index for index, label in enumerate(class_names)}
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for line, path, label, split in rows:
        if label not in label_indices:
            raise DatasetError(f"{manifest} line {line}: label {label!r} has no training rows; add some or drop the row")
        splits[split].append((path, label_indices[label]))
    return ImageDataset(class_names, splits["train"], splits["val"] or None, splits["test"] or None,
                        origin=f"csv:{location}")


@hookimpl
def register_datasets(register):
    """Register the ``csv`` dataset loader."""
    register("csv", load, description="a CSV manifest of path,label[,split] rows")
