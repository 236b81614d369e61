"""Built-in batch transforms: ``mixup`` and ``cutmix``, from torchvision's ``transforms.v2``.

Registered through ``register_batch_transforms`` exactly as a third party's would be.
``extra.mixup`` is mixup's ``alpha`` (Zhang et al., 2018): each image is blended with the next
one in the shuffled batch, ``lambda ~ Beta(alpha, alpha)``, and so are their labels.
``extra.cutmix`` is cutmix's ``alpha`` (Yun et al., 2019): a box of the next image is pasted in,
and the labels are mixed by its area. ``0`` (the default) leaves each off; with both on, mixup
runs first and cutmix mixes its already-mixed labels. They use torch's global generator,
which each trial seeds. torch and torchvision are imported when a fit builds one.
"""

from __future__ import annotations

from typing import Any

from automl_transfer.plugin import TrainingContext, hookimpl


def build_mixup(context: TrainingContext) -> Any:
    """Return torchvision's ``MixUp`` with ``alpha = extra.mixup`` for the fit's classes, or ``None`` at 0."""
    from torchvision.transforms import v2

    alpha = float(context.values["mixup"])
    return v2.MixUp(alpha=alpha, num_classes=context.num_classes) if alpha > 0 else None


def build_cutmix(context: TrainingContext) -> Any:
    """Return torchvision's ``CutMix`` with ``alpha = extra.cutmix`` for the fit's classes, or ``None`` at 0."""
    from torchvision.transforms import v2

    alpha = float(context.values["cutmix"])
    return v2.CutMix(alpha=alpha, num_classes=context.num_classes) if alpha > 0 else None


@hookimpl
def register_batch_transforms(register):
    """Register ``mixup`` and ``cutmix``, applied in that order."""
    register("mixup", build_mixup, settings={"mixup": 0.0},
             description="mixup: blend image pairs and their labels, alpha = extra.mixup")
    register("cutmix", build_cutmix, settings={"cutmix": 0.0},
             description="cutmix: paste a box of another image, labels by area, alpha = extra.cutmix")
