"""The settings of one trial, typed and resolved: from the search space to the trainer.

:meth:`automl_transfer.space.SearchSpace.suggest` samples a plain dict; :meth:`TrialParams.resolve`
turns it into a :class:`TrialParams` once, filling in what depends on the source model (its
own image size and interpolation when the space leaves them open). The trainer, the
study's ``params`` user attr and ``model.json`` all hold this one object (as a dict through
:meth:`TrialParams.to_dict`), so no value is worked out twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

#: The interpolation used when a source's data config names none.
DEFAULT_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class TrialParams:
    """Everything one trial trains with.

    :param source: ``PLUGIN:MODEL[@WEIGHTS]``, the backbone the trial starts from.
    :param freeze_depth: the share of the backbone's parameter groups frozen, from the input side.
    :param lr: the peak AdamW learning rate.
    :param weight_decay: AdamW's decoupled weight decay.
    :param l2sp: the L2-SP strength toward the starting weights (0: off).
    :param l1: the L1 strength on the trainable weights (0: off).
    :param head: the registered head's name.
    :param head_params: keyword arguments of the head's builder.
    :param epochs: passes over the training split.
    :param batch_size: images per optimiser step (the first size tried; see ``TrainedModel.batch_size``).
    :param image_size: the side of the square training images, in pixels.
    :param interpolation: how images are resized (``bilinear``, ``bicubic`` ...).
    :param label_smoothing: label smoothing of the training loss.
    :param augment: how strongly images are cropped and flipped: ``none``, ``light`` or ``strong``.
    :param warmup_epochs: epochs of linear learning-rate warm-up.
    :param min_steps: the fewest optimiser steps the fit takes (small datasets make several
        passes per epoch).
    :param patience: epochs without improvement after which the trial stops (0: never).
    :param extra: plugin settings, by name.
    """

    source: str
    freeze_depth: float
    lr: float
    weight_decay: float
    l2sp: float
    head: str
    head_params: dict[str, Any]
    epochs: int
    batch_size: int
    image_size: int
    interpolation: str
    label_smoothing: float
    augment: str
    warmup_epochs: float
    l1: float = 0.0
    min_steps: int = 0
    patience: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, suggested: Mapping[str, Any], data_config: Mapping[str, Any]) -> TrialParams:
        """Build the parameters of a trial from sampled values and its source's data config.

        :param suggested: what :meth:`SearchSpace.suggest` returned (``image_size`` may be
            ``None``: the source's own size).
        :param data_config: the source backbone's ``data_config`` (``input_size``, ``interpolation``).
        :returns: the resolved parameters.
        :raises KeyError: when ``suggested`` lacks a required field.
        """
        values = {name: suggested[name] for name in _FIELDS if name in suggested}
        values["image_size"], interpolation = preprocessing_for(values.get("image_size"), data_config)
        values.setdefault("interpolation", interpolation)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, content: Mapping[str, Any]) -> TrialParams:
        """Rebuild parameters from :meth:`to_dict`'s output; keys this version does not know are ignored.

        :raises KeyError: when a required field is missing.
        """
        missing = [name for name, spec in _FIELDS.items() if name not in content and _required(spec)]
        if missing:
            raise KeyError(f"trial parameters lack {', '.join(missing)}")
        values = {name: content[name] for name in _FIELDS if name in content}
        if isinstance(values["augment"], bool):  # recorded by 0.1, where true meant the strong recipe
            values["augment"] = "strong" if values["augment"] else "none"
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-ready dict (the study's ``params`` user attr)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialParams:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


_FIELDS = {spec.name: spec for spec in dataclasses.fields(TrialParams)}


def _required(spec: dataclasses.Field) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def preprocessing_for(image_size: int | None, data_config: Mapping[str, Any]) -> tuple[int, str]:
    """Return the image size and interpolation a trial of a source uses.

    :param image_size: the size the space fixes or sampled, or ``None`` for the source's own.
    :param data_config: the source backbone's ``data_config``.
    :returns: ``(image_size, interpolation)``.
    """
    size = int(image_size) if isinstance(image_size, int) else int(data_config["input_size"][-1])
    return size, data_config.get("interpolation") or DEFAULT_INTERPOLATION
