"""The augmentation strengths a search space may name, apart from the code that applies them.

:mod:`automl_transfer.data.batches` applies an :class:`Augmentation` on the training device; the
search space only checks a name against :data:`AUGMENTATIONS`, so reading a space needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """A random resized crop and flip drawn per image.

    :param crop_area: the share of the image a crop keeps, drawn uniformly in this range.
    :param flip: whether half the images are mirrored left to right.
    """

    crop_area: tuple[float, float]
    flip: bool


#: The augmentation strengths a search space names (``augment: light``).
AUGMENTATIONS: dict[str, Augmentation | None] = {
    "none": None,
    "light": Augmentation(crop_area=(0.8, 1.0), flip=False),
    "strong": Augmentation(crop_area=(0.25, 1.0), flip=True),
}
