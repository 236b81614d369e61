"""Scoring a saved model on labelled images: accuracy, macro-F1, per-class precision and recall.

:func:`score_model` is what ``automl-transfer evaluate`` and ``search --test`` run. The
images go through the same :func:`~automl_transfer.data.images.decode_images` as in training
and the model sees them exactly as :meth:`LoadedModel.predict` feeds them (``uint8`` scaled to
``[0, 1]``, no autocast), so the numbers are the ones a user computes from ``predict --json``.

Which images: a dataset's test split when it has one, otherwise every image it holds (its
train and validation sets); :attr:`Evaluation.split` says which. The dataset's classes are
matched to the model's by name, so a test set may hold fewer classes than the model knows,
never a class it does not know.

Example::

    model = load_model("runs/pets")
    evaluation = score_model(model, read_dataset("imagefolder:data/pets-test"))
    print(evaluation.accuracy, evaluation.per_class()["cat"]["recall"])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from automl_transfer.contract.components import ImageDataset, ImageItem
from automl_transfer.data.images import decode_images
from automl_transfer.errors import DatasetError
from automl_transfer.inference.predictor import LoadedModel
from automl_transfer.training.metrics import accuracy, confusion_matrix, macro_f1, precision_recall

#: Images decoded at once: bounds the memory a large test set needs.
CHUNK_IMAGES = 256

#: :attr:`Evaluation.split` when the dataset has a test split, and when it has none.
TEST_SPLIT, ALL_IMAGES = "test", "all"


@dataclass
class Evaluation:
    """A model's scores on labelled images.

    :param dataset: the dataset, as written (``imagefolder:data/pets``).
    :param split: ``"test"`` (the dataset's test split) or ``"all"`` (it has none: every image).
    :param n_images: how many images were scored.
    :param n_skipped: unreadable images left out (only with ``skip_bad_images``).
    :param class_names: the model's classes; rows and columns of the confusion matrix.
    :param accuracy: the share of images whose predicted class is their label.
    :param macro_f1: the mean F1 over the classes that occur as a label or a prediction.
    :param precision: per class, the share of its predictions that were right (``None``: never predicted).
    :param recall: per class, the share of its images predicted as it (``None``: no image of it).
    :param support: per class, how many images of it were scored.
    :param confusion_matrix: ``[true][predicted]`` counts.
    :param trial: the trial that produced the model, from ``model.json``.
    """

    dataset: str
    split: str
    n_images: int
    n_skipped: int
    class_names: list[str]
    accuracy: float
    macro_f1: float
    precision: list[float | None]
    recall: list[float | None]
    support: list[int]
    confusion_matrix: list[list[int]]
    trial: int | None

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Return ``{class: {"precision", "recall", "images"}}`` in the model's class order."""
        return {
            name: {"precision": precision, "recall": recall, "images": images}
            for name, precision, recall, images in zip(self.class_names, self.precision, self.recall, self.support)
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form ``evaluate --json`` prints and ``summary.json`` keeps under ``test``."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n_images": self.n_images,
            "n_skipped": self.n_skipped,
            "trial": self.trial,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": self.per_class(),
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion_matrix,
        }

    def describe_data(self) -> str:
        """Say which images were scored: ``the test split of D (120 images)`` or ``all 250 images of D ...``."""
        return describe_split(self.dataset, self.split, self.n_images)


def describe_split(dataset: str, split: str, n_images: int) -> str:
    """Say which images of ``dataset`` a score is on, for people."""
    if split == TEST_SPLIT:
        return f"the test split of {dataset} ({n_images} images)"
    return f"all {n_images} images of {dataset} (it has no test split)"


def evaluation_split(dataset: ImageDataset) -> tuple[str, Sequence[tuple[ImageItem, int]]]:
    """Return the images a model is scored on: ``("test", the test split)`` or ``("all", train + val)``."""
    if dataset.test is not None:
        return TEST_SPLIT, dataset.test
    return ALL_IMAGES, [*dataset.train, *(dataset.val or [])]


def class_indices(model_classes: Sequence[str], dataset: ImageDataset, owner: str = "the model") -> list[int]:
    """Map each of the dataset's labels to the index of the model's class of the same name.

    :param owner: what ``model_classes`` belong to, for the error message.
    :returns: ``indices[label]`` is the model's index for dataset label ``label``.
    :raises DatasetError: naming the dataset's classes the model does not know.
    """
    position = {name: index for index, name in enumerate(model_classes)}
    unknown = [name for name in dataset.class_names if name not in position]
    if unknown:
        raise DatasetError(
            f"{dataset.origin or 'the dataset'} has class(es) {unknown} that {owner} does not know "
            f"(its classes: {list(model_classes)}); score it on images of those classes only"
        )
    return [position[name] for name in dataset.class_names]


def score_model(
    model: LoadedModel,
    dataset: ImageDataset,
    *,
    batch_size: int = 64,
    skip_bad_images: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Score ``model`` on the dataset's test split, or on all its images when it has none.

    :param model: a model from :func:`~automl_transfer.inference.predictor.load_model`.
    :param dataset: a loaded dataset (:func:`~automl_transfer.data.datasets.read_dataset`).
    :param batch_size: images per forward pass.
    :param skip_bad_images: leave unreadable images out (counted) instead of failing.
    :param progress: called as ``progress(done, total)`` before the first image and as images are scored.
    :returns: the :class:`Evaluation`.
    :raises DatasetError: a class the model does not know, an unreadable image (naming it), or
        no readable image at all.
    """
    split, items = evaluation_split(dataset)
    indices = torch.tensor(class_indices(model.class_names, dataset), dtype=torch.int64)
    num_classes = len(model.class_names)
    confusion = torch.zeros((num_classes, num_classes), dtype=torch.int64)
    n_skipped = 0
    if progress is not None:
        progress(0, len(items))
    for start in range(0, len(items), CHUNK_IMAGES):
        chunk = items[start : start + CHUNK_IMAGES]
        on_decoded = None if progress is None else (lambda done, base=start: progress(base + done, len(items)))
        images, labels, skipped = decode_images(
            chunk, model.image_size, model.interpolation, skip_bad_images, on_decoded
        )
        n_skipped += skipped
        predictions = classify(model, images, batch_size)
        confusion += confusion_matrix(indices[labels], predictions, num_classes)
    if int(confusion.sum()) == 0:
        raise DatasetError(f"{dataset.origin}: none of its {len(items)} images could be read; nothing to score")
    precision, recall = precision_recall(confusion)
    return Evaluation(
        dataset=dataset.origin,
        split=split,
        n_images=int(confusion.sum()),
        n_skipped=n_skipped,
        class_names=list(model.class_names),
        accuracy=accuracy(confusion),
        macro_f1=macro_f1(confusion),
        precision=precision,
        recall=recall,
        support=confusion.sum(dim=1).tolist(),
        confusion_matrix=confusion.tolist(),
        trial=model.info.get("trial"),
    )


def classify(model: LoadedModel, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return the predicted class index of each ``uint8 (N, 3, S, S)`` image, on the CPU."""
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(model.device).float() / 255
            predictions.append(model.model(batch).argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)
