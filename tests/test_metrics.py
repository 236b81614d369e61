"""Accuracy and macro-F1 from confusion matrices agree with scikit-learn."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from automl_transfer.training.metrics import accuracy, confusion_matrix, macro_f1


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (200,), generator=generator)
    # class 4 is never predicted and class 5 never occurs: both edge cases of macro-F1
    guesses = torch.randint(0, 4, (200,), generator=generator)
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, labels, guesses).clamp(max=3)
    confusion = confusion_matrix(labels, predictions, num_classes=6)

    assert accuracy(confusion) == pytest.approx(accuracy_score(labels, predictions))
    assert macro_f1(confusion) == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))


def test_confusion_matrices_of_batches_add_up():
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    predictions = torch.tensor([0, 2, 2, 1, 1, 0, 2])
    whole = confusion_matrix(labels, predictions, 3)
    parts = confusion_matrix(labels[:3], predictions[:3], 3) + confusion_matrix(labels[3:], predictions[3:], 3)
    assert torch.equal(whole, parts)
    assert whole.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 2]]


def test_an_empty_matrix_gives_nan():
    empty = torch.zeros(3, 3, dtype=torch.int64)
    assert math.isnan(accuracy(empty)) and math.isnan(macro_f1(empty))
