"""Scoring a model on labelled images: accuracy, macro-F1 and loss from one confusion matrix."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from automl_transfer.data.batches import DeviceSplit, to_model_input
from automl_transfer.data.prepare import LabelledTensors
from automl_transfer.model.network import TransferModel
from automl_transfer.training.metrics import accuracy, confusion_matrix, macro_f1


def evaluate(model: TransferModel, tensors: LabelledTensors, device: torch.device, batch_size: int) -> dict[str, float]:
    """Score ``model`` on labelled images.

    The model is moved to ``device`` and left there in eval mode. Predictions do not depend
    on the batch size beyond float rounding: counts are accumulated in a confusion matrix and
    the loss summed in float64. On CUDA the forward pass runs as :func:`fit` validates
    (bf16 autocast, channels-last, with the weights put back in contiguous format afterwards),
    so a reloaded model evaluated with the fit's batch size reproduces the metrics the fit
    recorded up to bf16 rounding (a sample whose top two logits nearly tie may flip; more so
    when the fit used ``torch.compile``).

    :param model: a model taking images in ``[0, 1]``.
    :param tensors: uint8 images ``(N, 3, S, S)`` and int64 labels on the CPU, ``N >= 1``.
    :param device: where to run the model.
    :param batch_size: images per forward pass.
    :returns: ``{"accuracy", "macro_f1", "val_loss"}``; ``val_loss`` is the mean
        cross-entropy without label smoothing.
    :raises ValueError: ``tensors`` holds no images.
    """
    cuda = device.type == "cuda"
    model.to(device)
    model.eval()
    if cuda:
        model.to(memory_format=torch.channels_last)
    try:
        return evaluate_split(model, DeviceSplit(tensors, device), batch_size, device, channels_last=cuda)
    finally:
        if cuda:
            model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def evaluate_split(
    network: nn.Module, split: DeviceSplit, batch_size: int, device: torch.device, *, channels_last: bool
) -> dict[str, float]:
    """Score an eval-mode network on a split, synchronising with the device only at the end.

    :param network: the model (or its compiled wrapper), in eval mode on ``device``.
    :param split: the images and labels, placed for ``device``.
    :param batch_size: images per forward pass.
    :param channels_last: feed channels-last batches (CUDA).
    :returns: ``{"val_loss", "accuracy", "macro_f1"}``.
    :raises ValueError: the split holds no images.
    """
    if len(split) == 0:
        raise ValueError("there are no images to evaluate")
    confusion = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(split), batch_size):
        images, labels = split.take(slice(start, start + batch_size))
        with autocast(device):
            logits = network(to_model_input(images, channels_last=channels_last)).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        batch_confusion = confusion_matrix(labels, logits.argmax(dim=1), logits.shape[1])
        confusion = batch_confusion if confusion is None else confusion + batch_confusion
    return {"val_loss": float(loss_sum) / len(split), "accuracy": accuracy(confusion), "macro_f1": macro_f1(confusion)}


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Return bf16 autocast on CUDA; nothing on the CPU, where float32 keeps runs reproducible and fast enough."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


