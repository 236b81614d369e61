"""Batches cut on the training device from uint8 tensors placed there once per fit.

A split's images are copied to the GPU once (through pinned memory) and stay there when
they fit in a share of the free GPU memory; larger splits stay in host memory and each
batch is gathered straight into pinned memory and copied without blocking. Batches become
float ``[0, 1]`` only on the device, and augmentation runs there on the whole batch.

torchvision's ``transforms.v2`` draws one set of crop parameters per call, so a batch
would share a single crop; :func:`augment` instead draws a crop and flip for every image
and applies them all with one ``affine_grid`` / ``grid_sample``. How strong the
augmentation is comes from :data:`AUGMENTATIONS`: ``none``, ``light`` (a crop keeping at least
80% of the image, no flip: nothing that removes the object from a small image or turns a
digit into another) or ``strong`` (random resized crops down to a quarter of the image and
flips, the usual ImageNet fine-tuning recipe).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from automl_transfer.data.augmentations import AUGMENTATIONS, Augmentation
from automl_transfer.data.prepare import LabelledTensors

#: A split stays on the GPU when its images take at most this share of the free GPU memory.
RESIDENT_SHARE = 0.25

#: Width-to-height ratio of a random crop.
CROP_RATIO = (3 / 4, 4 / 3)


class DeviceSplit:
    """One split's images and labels, placed where batches for ``device`` are cut from.

    :param tensors: uint8 images ``(N, 3, S, S)`` and int64 labels ``(N,)`` on the CPU.
    :param device: the device batches are delivered to.
    :param resident: keep the whole split on ``device``; ``None`` decides by size (always
        on the CPU; on CUDA when the images take at most :data:`RESIDENT_SHARE` of free memory).
    """

    def __init__(self, tensors: LabelledTensors, device: torch.device, resident: bool | None = None):
        self.device = device
        self.size = len(tensors.labels)
        if resident is None:
            resident = device.type != "cuda" or fits_in_memory(tensors.images.numel() * tensors.images.element_size(), device)
        self.resident = resident
        if resident and device.type == "cuda":
            self.images = tensors.images.pin_memory().to(device, non_blocking=True)
            self.labels = tensors.labels.pin_memory().to(device, non_blocking=True)
        elif resident:
            self.images = tensors.images.to(device)
            self.labels = tensors.labels.to(device)
        else:
            self.images = tensors.images
            self.labels = tensors.labels
        #: where shuffled indices must be drawn: with the data they index.
        self.storage_device = self.images.device

    def __len__(self) -> int:
        return self.size

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """Return a random order of the split's rows, drawn with ``generator`` (on :attr:`storage_device`)."""
        return torch.randperm(self.size, generator=generator, device=self.storage_device)

    def take(self, rows: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the uint8 images and int64 labels of ``rows``, on the device.

        :param rows: row indices (on :attr:`storage_device`) or a slice.
        :returns: images ``(B, 3, S, S)`` uint8 and labels ``(B,)`` int64, both on ``device``.
        """
        if not self.resident:
            return _gather_to_device(self.images, rows, self.device), _gather_to_device(self.labels, rows, self.device)
        if isinstance(rows, slice):
            return self.images[rows], self.labels[rows]
        return self.images.index_select(0, rows), self.labels.index_select(0, rows)


def to_model_input(
    images: torch.Tensor,
    *,
    channels_last: bool = False,
    augmentation: Augmentation | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turn a uint8 batch into the float ``[0, 1]`` input a :class:`TransferModel` takes.

    A batch that is not uint8 is the cached output of a model's frozen front
    (:mod:`automl_transfer.training.frozen_prefix`): it is returned as it is.

    :param images: uint8 ``(B, 3, S, S)`` on the device.
    :param channels_last: return the batch in channels-last memory format.
    :param augmentation: the random crops and flips to apply (see :func:`augment`), drawn
        with ``generator`` (on the batch's device); ``None`` leaves the images as they are.
    :returns: float32 ``(B, 3, S, S)`` with values in ``[0, 1]``.
    :raises ValueError: an augmentation without a generator.
    """
    if images.dtype != torch.uint8:
        return images
    batch = images.float().div_(255)
    if augmentation is not None:
        if generator is None:
            raise ValueError("an augmentation needs a generator to draw its crops and flips with")
        batch = augment(batch, generator, augmentation)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def augment(
    images: torch.Tensor, generator: torch.Generator, augmentation: Augmentation = AUGMENTATIONS["strong"]
) -> torch.Tensor:
    """Apply a random resized crop and, when asked, a random horizontal flip to every image of a batch.

    Each image gets its own crop: an area in ``augmentation.crop_area`` of the image, a
    width-to-height ratio in :data:`CROP_RATIO` (log-uniform), a uniform position inside
    the image, resized back to the input size with bilinear interpolation; then a flip
    with probability 1/2 when ``augmentation.flip``. Everything runs on the batch's device
    without synchronising; the same draws are made with or without flips.

    :param images: float ``(B, C, H, W)``.
    :param generator: a ``torch.Generator`` on the batch's device.
    :param augmentation: how strong the crops are and whether images are flipped.
    :returns: a new float batch of the same shape.
    """
    count = images.shape[0]
    draws = torch.rand(count, 5, generator=generator, device=images.device)
    low, high = augmentation.crop_area
    area = low + (high - low) * draws[:, 0]
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[:, 1])
    # Half-widths of the crop in grid_sample's [-1, 1] coordinates, where the image spans 2.
    half_width = torch.sqrt(area * aspect).clamp(max=1.0)
    half_height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - half_width) * (2 * draws[:, 2] - 1)
    centre_y = (1 - half_height) * (2 * draws[:, 3] - 1)
    flip = torch.where(draws[:, 4] < 0.5, -1.0, 1.0) if augmentation.flip else torch.ones_like(area)
    zeros = torch.zeros_like(area)
    theta = torch.stack(
        [torch.stack([half_width * flip, zeros, centre_x], dim=1), torch.stack([zeros, half_height, centre_y], dim=1)],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fits_in_memory(nbytes: int, device: torch.device) -> bool:
    """Say whether ``nbytes`` take at most :data:`RESIDENT_SHARE` of ``device``'s free memory.

    On the CPU the free memory is what the system reports available (all of it is assumed
    free where it reports nothing).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return True
    return nbytes <= RESIDENT_SHARE * free


def _gather_to_device(source: torch.Tensor, rows: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    """Gather ``rows`` of a host tensor straight into pinned memory and copy them to ``device`` without blocking."""
    if isinstance(rows, slice):
        part = source[rows]
        pinned = torch.empty(part.shape, dtype=source.dtype, pin_memory=True)
        pinned.copy_(part)
    else:
        pinned = torch.empty((len(rows), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
        torch.index_select(source, 0, rows, out=pinned)
    return pinned.to(device, non_blocking=True)
