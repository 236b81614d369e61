"""Batches cut on the device, and per-image augmentation with one grid_sample."""

from __future__ import annotations

import pytest
import torch

from automl_transfer.data import batches
from automl_transfer.data.batches import (
    AUGMENTATIONS,
    Augmentation,
    DeviceSplit,
    augment,
    to_model_input,
)
from automl_transfer.data.prepare import LabelledTensors


def ramps(count: int, size: int = 16) -> torch.Tensor:
    """Float images in [0, 1] that differ from their mirror image and from any crop of themselves."""
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    y = torch.linspace(0, 1, size).view(1, 1, size, 1)
    return (0.7 * x + 0.3 * y * y).expand(count, 3, size, size).contiguous()


def test_model_input_is_float_in_unit_range():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    batch = to_model_input(images, channels_last=True)
    assert batch.dtype == torch.float32 and batch.is_contiguous(memory_format=torch.channels_last)
    assert batch[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_full_size_crops_give_the_image_or_its_mirror(monkeypatch):
    monkeypatch.setattr(batches, "CROP_RATIO", (1.0, 1.0))
    images = ramps(64)
    out = augment(images, torch.Generator().manual_seed(0), Augmentation(crop_area=(1.0, 1.0), flip=True))
    same = (out - images).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - images.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same ^ mirrored).all())
    assert 10 < int(mirrored.sum()) < 54
    unflipped = augment(images, torch.Generator().manual_seed(0), Augmentation(crop_area=(1.0, 1.0), flip=False))
    assert (unflipped - images).abs().max() < 1e-5


def test_light_augmentation_keeps_most_of_every_image():
    images = ramps(64)
    light = augment(images, torch.Generator().manual_seed(0), AUGMENTATIONS["light"])
    strong = augment(images, torch.Generator().manual_seed(0), AUGMENTATIONS["strong"])
    # A ramp's values span what the crop keeps: a light crop keeps most of the range, a strong one may not.
    assert float((light.amax(dim=(1, 2, 3)) - light.amin(dim=(1, 2, 3))).min()) > 0.7
    assert float((strong.amax(dim=(1, 2, 3)) - strong.amin(dim=(1, 2, 3))).min()) < 0.7


def test_every_image_gets_its_own_crop():
    images = ramps(16)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[0], flat[index]) for index in range(1, 16))
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(1)))


def test_split_on_the_cpu_hands_out_the_rows_asked_for():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    split = DeviceSplit(LabelledTensors(images=images, labels=torch.arange(10)), torch.device("cpu"))
    assert split.resident and len(split) == 10
    order = split.permutation(torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))
    batch, labels = split.take(order[:4])
    assert labels.tolist() == order[:4].tolist() and batch[:, 0, 0, 0].tolist() == order[:4].tolist()
    batch, labels = split.take(slice(8, 12))
    assert labels.tolist() == [8, 9] and batch.shape == (2, 3, 2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_split_streamed_from_pinned_memory_matches_a_resident_one():
    device = torch.device("cuda", torch.cuda.current_device())
    generator = torch.Generator().manual_seed(0)
    tensors = LabelledTensors(
        images=torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, 5, (50,), generator=generator),
    )
    resident = DeviceSplit(tensors, device, resident=True)
    streamed = DeviceSplit(tensors, device, resident=False)
    rows = torch.tensor([3, 1, 40, 7])
    for taken in (slice(10, 30), rows):
        expected = resident.take(taken if isinstance(taken, slice) else taken.to(device))
        for actual, wanted in zip(streamed.take(taken), expected):
            assert actual.device == device and torch.equal(actual, wanted)
