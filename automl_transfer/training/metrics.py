"""Classification metrics from a confusion matrix, computed with torch on any device.

A confusion matrix is accumulated batch by batch on the device without synchronising, so
the metrics do not depend on how the data was split into batches.
"""

from __future__ import annotations

import torch


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Count (true label, predicted label) pairs.

    :param labels: true labels, int64 ``(N,)`` in ``[0, num_classes)``.
    :param predictions: predicted labels, int64 ``(N,)`` on the same device.
    :param num_classes: the number of classes ``C``.
    :returns: an int64 ``(C, C)`` tensor on the labels' device; row = true, column = predicted.
    """
    pairs = labels * num_classes + predictions
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy(confusion: torch.Tensor) -> float:
    """Return the fraction of correct predictions a confusion matrix records (``nan`` when it is empty)."""
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / total if total else float("nan")


def macro_f1(confusion: torch.Tensor) -> float:
    """Return the unweighted mean F1 over the classes that occur as a label or a prediction.

    This is scikit-learn's ``f1_score(average="macro")``: a class absent from both the
    labels and the predictions is left out rather than counted as 0.

    :param confusion: a ``(C, C)`` confusion matrix from :func:`confusion_matrix`.
    :returns: the macro-averaged F1 in ``[0, 1]`` (``nan`` when the matrix is empty).
    """
    counts = confusion.double()
    true_positives = counts.diagonal()
    labelled = counts.sum(dim=1)
    predicted = counts.sum(dim=0)
    present = (labelled + predicted) > 0
    if not bool(present.any()):
        return float("nan")
    f1 = 2 * true_positives[present] / (labelled[present] + predicted[present])
    return float(f1.mean())


def precision_recall(confusion: torch.Tensor) -> tuple[list[float | None], list[float | None]]:
    """Return each class's precision and recall from a confusion matrix.

    :param confusion: a ``(C, C)`` confusion matrix from :func:`confusion_matrix`.
    :returns: ``(precision, recall)``, one value per class; ``None`` where it is not defined
        (precision of a class never predicted, recall of a class that never occurs).
    """
    counts = confusion.double().cpu()
    true_positives = counts.diagonal()
    predicted, labelled = counts.sum(dim=0), counts.sum(dim=1)
    precision = [float(tp / n) if n > 0 else None for tp, n in zip(true_positives, predicted)]
    recall = [float(tp / n) if n > 0 else None for tp, n in zip(true_positives, labelled)]
    return precision, recall
