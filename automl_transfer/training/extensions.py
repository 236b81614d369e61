"""The regularizers and batch transforms of one fit, built from the plugins that registered them.

Plugins register them through ``register_regularizers`` and ``register_batch_transforms``
(:mod:`automl_transfer.contract.hookspecs`); the built-ins (L2-SP, L1, DELTA, BSS, mixup,
cutmix) are registered exactly like a third party's. :meth:`TrainingExtensions.build` asks
each one, in registration order, to set itself up for the fit; those whose settings leave
them off return ``None`` and cost nothing. The trainer then calls, every step:

- :meth:`TrainingExtensions.transform` on the augmented batch (mixup, cutmix);
- :meth:`TrainingExtensions.loss` after the forward pass (DELTA, BSS);
- :meth:`TrainingExtensions.add_gradients` between ``backward`` and the optimiser's step (L2-SP, L1).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from automl_transfer.contract.training import TrainingContext
from automl_transfer.errors import PluginError
from automl_transfer.registry import components

#: ``transform(images, labels) -> (images, targets)``, as a batch-transform plugin's build returns it.
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TrainingExtensions:
    """The regularizers and batch transforms that are on for one fit.

    :param regularizers: ``(name, regularizer)`` pairs, in the order they apply.
    :param transforms: ``(name, transform)`` pairs, in the order they apply.
    """

    def __init__(self, regularizers: list[tuple[str, Any]], transforms: list[tuple[str, BatchTransform]]):
        self.regularizers = regularizers
        self.transforms = transforms
        self._losses = [(name, item.loss) for name, item in regularizers if hasattr(item, "loss")]
        self._gradients = [item.add_gradient for _, item in regularizers if hasattr(item, "add_gradient")]

    @classmethod
    def build(
        cls,
        model: nn.Module,
        settings: Any,
        param_groups: list[list[str]],
        n_frozen_groups: int,
        num_classes: int,
    ) -> TrainingExtensions:
        """Set up every registered regularizer and batch transform for a fit that is about to start.

        :param model: the ``TransferModel`` to train, frozen parameters already frozen, on its device.
        :param settings: the trial's ``TrialSettings``; ``settings.extra`` holds the plugins' settings.
        :param param_groups: the backbone's parameter groups, input side first.
        :param n_frozen_groups: how many of them are frozen.
        :param num_classes: how many classes the head predicts.
        :returns: the extensions that are on.
        :raises PluginError: a builder raised, or returned something that is not an extension;
            the message names the component and its plugin.
        """
        shared_source: list[nn.Module] = []
        built: dict[str, list[tuple[str, Any]]] = {}
        for kind in ("regularizer", "batch_transform"):
            built[kind] = []
            for component in components(kind, in_load_order=True):
                values = {key: settings.extra.get(key, default) for key, default in component.settings.items()}
                context = TrainingContext(
                    model=model,
                    settings=settings,
                    values=values,
                    param_groups=param_groups,
                    n_frozen_groups=n_frozen_groups,
                    num_classes=num_classes,
                    device=next(model.parameters()).device,
                    _source=shared_source,
                )
                extension = _build_one(component, context)
                if extension is not None:
                    built[kind].append((component.name, extension))
        return cls(built["regularizer"], built["batch_transform"])

    @property
    def undecayed(self) -> set[int]:
        """The ``id`` of every parameter a regularizer takes out of AdamW's weight decay."""
        return {id(parameter) for _, item in self.regularizers for parameter in getattr(item, "undecayed", ())}

    def reuse_blocker(self) -> str | None:
        """Why the frozen layers' output cannot be computed once for this fit, or ``None`` when it can."""
        for name, transform in self.transforms:
            if getattr(transform, "changes_images", True):
                return f"batch transform {name} changes the images every step"
        for name, regularizer in self.regularizers:
            if getattr(regularizer, "reads_images", False):
                return f"regularizer {name} reads every layer's output"
        return None

    def transform(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the batch transforms in turn; return the images and the targets the loss compares with."""
        for _, transform in self.transforms:
            images, labels = transform(images, labels)
        return images, labels

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """Return the sum of the regularizers' loss terms for this batch, or ``None`` when none has one."""
        terms = [loss(logits, targets) for _, loss in self._losses]
        return torch.stack([term.float() for term in terms]).sum() if terms else None

    def add_gradients(self) -> None:
        """Let each regularizer add its term to the parameters' gradients (after ``backward``)."""
        for add_gradient in self._gradients:
            add_gradient()

    def close(self) -> None:
        """Call every extension's ``close()`` (forward hooks removed, copies freed) when the fit ends."""
        for _, extension in [*self.regularizers, *self.transforms]:
            close = getattr(extension, "close", None)
            if close is not None:
                close()


def _build_one(component: Any, context: TrainingContext) -> Any:
    """Call one component's builder; wrap a plugin's failure in a :class:`PluginError` naming it."""
    what = f"{component.kind.replace('_', ' ')} {component.name!r} of plugin {component.plugin!r}"
    try:
        extension = component.build(context)
    except (PluginError, torch.OutOfMemoryError):
        raise
    except Exception as error:
        raise PluginError(f"{what} failed to set up: {type(error).__name__}: {error}") from error
    if extension is None:
        return None
    if component.kind == "batch_transform" and not callable(extension):
        raise PluginError(f"{what} returned {extension!r}; a batch transform's build returns a function or None")
    if component.kind == "regularizer" and not any(
        hasattr(extension, name) for name in ("loss", "add_gradient", "undecayed")
    ):
        raise PluginError(f"{what} returned {extension!r}, which has no loss, add_gradient or undecayed")
    return extension
