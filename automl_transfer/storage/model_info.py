"""What ``model.json`` records about a saved model: :class:`BestModelInfo`."""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from automl_transfer.errors import RunDirError
from automl_transfer.storage.model_schema import check_model_json

#: Version of the ``model.json`` layout this module writes and reads.
FORMAT_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class BestModelInfo:
    """What ``model.json`` records about a best model; JSON-ready through :meth:`to_dict`.

    :param source: the backbone source the trial started from (``timm:resnet18@none``).
    :param backbone_plugin: the plugin that builds the backbone (``timm``).
    :param architecture: the model name given to that plugin (``resnet18``).
    :param head: the registered head name (``mlp``).
    :param head_params: keyword arguments the head was built with.
    :param num_classes: the number of classes the head predicts.
    :param class_names: the label names, index ``i`` naming class ``i``.
    :param preprocessing: ``image_size`` (int), ``interpolation`` (``"bilinear"`` ...),
        ``mean`` and ``std`` (3 floats each), exactly as used in training.
    :param params: every parameter of the trial that produced the model.
    :param metric: the name of the objective (``accuracy``).
    :param value: the objective value the model reached.
    :param trial: the Optuna trial number.
    :param dataset: the dataset the model was trained on (``digits``, ``imagefolder:data/pets``).
    :param metrics: every final validation metric of the trial (``accuracy``, ``macro_f1`` ...).
    :param batch_size: the batch size the model really trained with (smaller than
        ``params["batch_size"]`` after an out-of-memory halving); ``None`` in older files.
    :param best_epoch: the epoch of the trial whose weights the model holds (the best by
        validation); ``None`` in older files.
    :param refit: ``None`` for the model the trial selected, or how it was trained again on
        every labelled image after the search: ``{"epochs", "train_images", "seed"}``
        (``value`` and ``metrics`` stay the validation scores that selected it).
    :param created: when the model was saved, ISO 8601 in UTC (filled in when left out).
    :param format_version: the ``model.json`` layout version, :data:`FORMAT_VERSION`.
    """

    source: str
    backbone_plugin: str
    architecture: str
    head: str
    head_params: dict[str, Any]
    num_classes: int
    class_names: list[str]
    preprocessing: dict[str, Any]
    params: dict[str, Any]
    metric: str
    value: float
    trial: int
    dataset: str
    metrics: dict[str, float] = field(default_factory=dict)
    batch_size: int | None = None
    best_epoch: int | None = None
    refit: dict[str, Any] | None = None
    created: str = field(default_factory=_now)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the ``model.json`` content: a plain dict, ``format_version`` first."""
        content = asdict(self)
        return {"format_version": content.pop("format_version"), **content}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], origin: str = "model.json") -> "BestModelInfo":
        """Build the info from ``model.json`` content; keys this version does not know are ignored.

        :param content: the parsed JSON object (fields with defaults may be left out).
        :param origin: where it came from, for error messages.
        :raises RunDirError: when a required field is missing, ``format_version`` is not
            :data:`FORMAT_VERSION`, or a field breaks :mod:`~automl_transfer.storage.model_schema`.
        """
        version = content.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise RunDirError(
                f"{origin} has format_version {version!r}, this automl-transfer reads {FORMAT_VERSION}: "
                "use the automl-transfer version that wrote it"
            )
        fields = cls.__dataclass_fields__
        missing = [name for name, spec in fields.items() if name not in content and _is_required(spec)]
        if missing:
            raise RunDirError(f"{origin} lacks {', '.join(missing)}: it was not written by automl-transfer")
        check_model_json(content, origin)
        return cls(**{name: content[name] for name in fields if name in content})


def _is_required(spec: Field) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING


def as_info(info: BestModelInfo | Mapping[str, Any]) -> BestModelInfo:
    """Return ``info`` as a :class:`BestModelInfo`, checking a dict's fields.

    :raises ValueError: a dict with a field :class:`BestModelInfo` lacks.
    :raises RunDirError: a dict lacking a required field.
    """
    if isinstance(info, BestModelInfo):
        return info
    unknown = sorted(set(info) - set(BestModelInfo.__dataclass_fields__))
    if unknown:
        raise ValueError(f"model.json has no field {', '.join(unknown)}; the fields are those of BestModelInfo")
    return BestModelInfo.from_dict(info, origin="the best model's info")
