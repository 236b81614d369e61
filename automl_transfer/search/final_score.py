"""Scoring the search's final best model on held-out labelled images (``search --test``).

The images are those of ``--test DATASET`` when it is given, else the search dataset's own
test split (which the search never trains or validates on); a search with neither is not
scored. ``--test DATASET`` follows ``automl-transfer evaluate``: its test split when it has
one, otherwise all its images. The result goes into ``summary.json`` under ``test``, in the
form :meth:`~automl_transfer.inference.scoring.Evaluation.to_dict` gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from automl_transfer.contract.components import ImageDataset
from automl_transfer.data.datasets import read_dataset
from automl_transfer.inference.predictor import load_model
from automl_transfer.inference.scoring import class_indices, score_model
from automl_transfer.search.phases import Phase
from automl_transfer.storage.checkpoint import read_best_info


def held_out_data(test: str | None, dataset: ImageDataset) -> ImageDataset | None:
    """Return the data the final model is scored on, checked before any training.

    :param test: the ``--test`` dataset text, or ``None``.
    :param dataset: the search's dataset.
    :returns: the ``--test`` dataset, or ``dataset`` when it has a test split, else ``None``.
    :raises AutoMLTransferError: an unusable ``--test`` dataset, or one with a class the search
        dataset does not have.
    """
    if test is None:
        return dataset if dataset.test is not None else None
    held_out = read_dataset(test, min_classes=1)
    class_indices(list(dataset.class_names), held_out, owner=f"the search dataset {dataset.origin}")
    return held_out


def score_final_model(
    run_dir: Path, held_out: ImageDataset, device: torch.device, skip_bad_images: bool = False
) -> dict[str, Any] | None:
    """Score the run's best model on ``held_out``, telling the observers as it goes.

    :param skip_bad_images: leave unreadable images out (counted) instead of failing.
    :returns: the evaluation's JSON-ready form, or ``None`` when no trial completed.
    :raises AutoMLTransferError: an image that cannot be read.
    """
    if read_best_info(run_dir) is None:
        return None
    model = load_model(run_dir, device=device)
    with Phase("scoring the best model on held-out images") as progress:
        return score_model(model, held_out, skip_bad_images=skip_bad_images, progress=progress).to_dict()
