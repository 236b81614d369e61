"""The settings of one trial, typed and resolved: from the search space to the trainer.

:class:`TrialParams` has one field per row of the trial-settings table
(:mod:`automl_transfer.contract.trial_settings`), made from it, so a new setting needs no edit here.

:meth:`automl_transfer.space.SearchSpace.suggest` samples a plain dict; :meth:`TrialParams.resolve`
turns it into a :class:`TrialParams` once, filling in what depends on the source model (its
own image size and interpolation when the space leaves them open). The trainer, the
study's ``params`` user attr and ``model.json`` all hold this one object (as a dict through
:meth:`TrialParams.to_dict`), so no value is worked out twice.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from typing import Any, Mapping

from automl_transfer.contract.trial_settings import REQUIRED, Setting, trial_fields

#: The interpolation used when a source's data config names none.
DEFAULT_INTERPOLATION = "bilinear"


class _TrialParamsMethods:
    """Everything one trial trains with: a field per trial setting of
    :data:`~automl_transfer.contract.trial_settings.SETTINGS` (their help says what each means),
    and two the source decides:

    :param head_params: keyword arguments of the head's builder.
    :param interpolation: how images are resized (``bilinear``, ``bicubic`` ...).

    ``image_size`` is resolved: the source's own size when the space leaves it open.
    """

    @classmethod
    def resolve(cls, suggested: Mapping[str, Any], data_config: Mapping[str, Any]) -> TrialParams:
        """Build the parameters of a trial from sampled values and its source's data config.

        :param suggested: what :meth:`SearchSpace.suggest` returned (``image_size`` may be
            ``None``: the source's own size).
        :param data_config: the source backbone's ``data_config`` (``input_size``, ``interpolation``).
        :returns: the resolved parameters.
        :raises KeyError: when ``suggested`` lacks a required field.
        """
        names = {spec.name for spec in dataclasses.fields(cls)}
        values = {name: value for name, value in suggested.items() if name in names}
        values["image_size"], interpolation = preprocessing_for(values.get("image_size"), data_config)
        values.setdefault("interpolation", interpolation)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, content: Mapping[str, Any]) -> TrialParams:
        """Rebuild parameters from :meth:`to_dict`'s output; keys this version does not know are ignored.

        A record made before a setting existed gets the setting's ``absent`` value.

        :raises KeyError: when a required field is missing.
        """
        fields = dataclasses.fields(cls)
        missing = [spec.name for spec in fields if spec.name not in content and _required(spec)]
        if missing:
            raise KeyError(f"trial parameters lack {', '.join(missing)}")
        values = {spec.name: content[spec.name] for spec in fields if spec.name in content}
        if isinstance(values["augment"], bool):  # recorded by 0.1, where true meant the strong recipe
            values["augment"] = "strong" if values["augment"] else "none"
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-ready dict (the study's ``params`` user attr)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialParams:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def training_values(self) -> dict[str, Any]:
        """Return ``{name: value}`` of the settings the trainer reads (``TrialSettings``' own fields)."""
        trained = {setting.name for setting in trial_fields() if setting.trains}
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self) if spec.name in trained}


def table_fields(settings: tuple[Setting, ...]) -> list[tuple[str, Any, dataclasses.Field]]:
    """Return ``make_dataclass`` fields for ``settings``: each typed, defaulting to its ``fallback``.

    :param settings: rows of the trial-settings table.
    :returns: ``(name, type, field)`` triples; a required setting's field has no default.
    """
    fields = []
    for setting in settings:
        fallback = setting.fallback
        if fallback is REQUIRED:
            spec = field()
        elif isinstance(fallback, (dict, list)):
            spec = field(default_factory=lambda value=fallback: copy.deepcopy(value))
        else:
            spec = field(default=fallback)
        fields.append((setting.name, setting.value_type, spec))
    return fields


#: A trial's parameters: the trial settings of the table, with ``head_params`` and ``interpolation``.
TrialParams = dataclasses.make_dataclass(
    "TrialParams",
    [
        *table_fields(trial_fields()),
        ("head_params", dict, field()),
        ("interpolation", str, field()),
    ],
    bases=(_TrialParamsMethods,),
    frozen=True,
    kw_only=True,
)
TrialParams.__module__ = __name__  # make_dataclass names no module before Python 3.12
TrialParams.__doc__ = _TrialParamsMethods.__doc__


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
