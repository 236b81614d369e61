"""The ``imagefolder`` dataset: a folder holding one sub-folder of images per class.

``imagefolder:data/pets`` accepts two layouts::

    data/pets/cat/001.jpg           data/pets/train/cat/001.jpg
    data/pets/dog/002.png           data/pets/val/cat/007.jpg     (or valid/, validation/)
                                    data/pets/test/dog/009.png    (optional)

On the left, the classes are the sub-folders and the core splits a stratified validation
set off. On the right (chosen when a ``train`` sub-folder exists and every other sub-folder
is ``val``, ``valid``, ``validation`` or ``test``, in any case), ``train`` defines the
classes; ``val`` and ``test`` may lack a class or leave its folder empty, but may not add
one. Class names are the folder names, sorted. Images are found at any depth under a class
folder; hidden files and folders (starting with ``.``) and files whose extension is not in
:func:`automl_transfer.plugin.image_extensions` are ignored, as are files directly in the
top folder.

Links to folders and files are followed, tracking where they really lead: a link that leads
back to a folder containing it (``elephant/loop -> ..``) would make the walk loop and label
other classes' images as this one, and two paths to one file would put the same image into
two classes or into both training and validation; both stop the load with a message naming
the paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from automl_transfer.plugin import DatasetError, ImageDataset, hookimpl, is_image_file

#: Sub-folder names (lower case) that make a split layout, and the split each one holds.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _images_under(folder: Path, seen: dict[str, Path]) -> list[Path]:
    """Every image file under ``folder``, following links; ``seen`` maps each real path found so far to its path.

    :raises DatasetError: a link to a folder that contains it, or a second path to a file already found.
    """
    found, walked = [], {os.path.realpath(folder)}
    for parent, folders, files in os.walk(folder, followlinks=True):
        here = os.path.realpath(parent)
        kept = []
        for name in sorted(name for name in folders if not name.startswith(".")):
            target = os.path.realpath(os.path.join(parent, name))
            if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                raise DatasetError(
                    f"{Path(parent, name)} is a link to {target}, a folder that contains it: reading it would loop "
                    "and give other images this class; remove the link"
                )
            if target not in walked:  # a second link to a folder of this class adds nothing
                walked.add(target)
                kept.append(name)
        folders[:] = kept
        for name in sorted(files):
            if is_image_file(name):
                found.append(_first_path(Path(parent, name), here, seen))
    return found


def _first_path(path: Path, real_parent: str, seen: dict[str, Path]) -> Path:
    """Record ``path``, a file in the folder whose real path is ``real_parent``, under its real path and return it.

    :raises DatasetError: another path of the dataset leads to the same file.
    """
    # A file that is not a link is where its folder really is: one lstat instead of one per path component.
    real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_parent, path.name)
    if real in seen:
        raise DatasetError(
            f"{seen[real]} and {path} are the same image file (through a link): one image cannot be in two classes "
            "or in both training and validation; remove one of the paths"
        )
    seen[real] = path
    return path


def _split_folders(root: Path) -> dict[str, Path] | None:
    """Return ``{"train": ..., "val": ..., "test": ...}`` for a split layout, else ``None``."""
    folders = _sub_folders(root)
    if not any(folder.name.lower() == "train" for folder in folders):
        return None
    if not all(folder.name.lower() in SPLIT_FOLDERS for folder in folders):
        return None
    splits: dict[str, Path] = {}
    for folder in folders:
        split = SPLIT_FOLDERS[folder.name.lower()]
        if split in splits:
            raise DatasetError(f"{root} has both {splits[split].name}/ and {folder.name}/ as {split} folders; keep one")
        splits[split] = folder
    return splits


def _class_images(folder: Path, seen: dict[str, Path]) -> dict[str, list[Path]]:
    return {class_folder.name: _images_under(class_folder, seen) for class_folder in _sub_folders(folder)}


def _training_classes(folder: Path, seen: dict[str, Path]) -> dict[str, list[Path]]:
    classes = _class_images(folder, seen)
    if not classes:  # one class is enough to score a model on; training asks for 2 (check_dataset)
        raise DatasetError(f"{folder} needs a sub-folder of images per class (found none)")
    for name, images in classes.items():
        if not images:
            raise DatasetError(
                f"class folder {folder / name} holds no images (.jpg, .png, .webp, ...); add images or remove it"
            )
    return classes


def _held_out(folder: Path, class_names: list[str], train_folder: Path, seen: dict[str, Path]) -> list[tuple[Path, int]]:
    items = []
    for name, images in _class_images(folder, seen).items():
        if name not in class_names:
            raise DatasetError(
                f"{folder / name} is a class the training folder {train_folder} does not have; "
                "add it there or remove it"
            )
        items.extend((image, class_names.index(name)) for image in images)
    if not items:
        raise DatasetError(f"{folder} holds no images in class sub-folders; add images or remove the folder")
    return items


def load(location: str | None) -> ImageDataset:
    """Load the image folder at ``location``.

    :param location: the folder, in either layout described in this module's docstring.
    :returns: an :class:`ImageDataset` of image paths; ``val``/``test`` set when the folder has them.
    :raises DatasetError: naming the folder at fault: missing, no class folder, a class
        folder without images, ambiguous or unknown split folders, an empty split folder, a
        link that loops, or two paths to one image file.
    """
    if not location:
        raise DatasetError("imagefolder needs a folder: write imagefolder:path/to/images")
    root = Path(os.path.expanduser(location))
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"dataset folder {root} {problem}")
    splits = _split_folders(root) or {"train": root}
    seen: dict[str, Path] = {}
    classes = _training_classes(splits["train"], seen)
    class_names = list(classes)
    train = [(image, label) for label, images in enumerate(classes.values()) for image in images]
    held_out = {split: _held_out(splits[split], class_names, splits["train"], seen) if split in splits else None
                for split in ("val", "test")}
    return ImageDataset(class_names, train, held_out["val"], held_out["test"], origin=f"imagefolder:{location}")


@hookimpl
def register_datasets(register):
    """Register the ``imagefolder`` dataset loader."""
    register("imagefolder", load, description="a folder of class sub-folders, optionally split into train/val/test")
