"""The schema of ``model.json``: the type and sane bounds of every field, checked before anything is built.

A ``model.json`` may have been edited, damaged or shared from another machine. Whatever it
holds, reading it must end in a model or in one clear line naming the field, never in a
traceback or in an allocation of gigabytes (``image_size: 200000`` had the kernel kill
``predict`` after 22 GB). :func:`check_model_json` is that check; fields this version does not
know are left alone.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from automl_transfer.contract.class_names import name_problem
from automl_transfer.contract.components import INTERPOLATION_NAMES, MAX_IMAGE_SIZE
from automl_transfer.errors import RunDirError

#: The most classes a saved model may predict.
MAX_CLASSES = 100_000


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty text"


def _whole(low: int, high: float = math.inf) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if not low <= value <= high:
            return f"must be from {low} to {high}" if high < math.inf else f"must be at least {low}"
        return None

    return check


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "must be a finite number"
    return None


def _three_numbers(positive: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) != 3 or any(_number(item) for item in value):
            return "must be a list of 3 finite numbers, one per colour channel"
        if positive and min(value) <= 0:
            return "must hold numbers greater than 0"
        return None

    return check


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) and all(isinstance(key, str) for key in value) else "must be a mapping"


def _head_params(value: Any) -> str | None:
    if _mapping(value):
        return "must be a mapping of parameter names to values"
    for name, item in value.items():
        if item is not None and not isinstance(item, (bool, str)) and _number(item):
            return f"holds {name}={item!r}; a head parameter is a number, text, true/false or null"
    return None


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else check(value)


#: ``field: check`` for the top-level fields; a check returns what is wrong, or ``None``.
FIELDS: dict[str, Callable[[Any], str | None]] = {
    "format_version": _whole(1),
    "source": _text,
    "backbone_plugin": _text,
    "architecture": _text,
    "head": _text,
    "head_params": _head_params,
    "num_classes": _whole(2, MAX_CLASSES),
    "class_names": lambda value: (
        "must be a list of texts" if not isinstance(value, list) or any(not isinstance(name, str) for name in value)
        else "holds an empty or blank name" if any(name_problem(name) for name in value) else None
    ),
    "preprocessing": _mapping,
    "params": _mapping,
    "metric": _text,
    "value": _number,
    "trial": _whole(0),
    "dataset": _text,
    "metrics": _mapping,
    "batch_size": _optional(_whole(1)),
    "best_epoch": _optional(_whole(1)),
    "refit": _optional(_mapping),
    "created": _text,
}

#: ``field: check`` inside ``preprocessing``.
PREPROCESSING: dict[str, Callable[[Any], str | None]] = {
    "image_size": _whole(1, MAX_IMAGE_SIZE),
    "interpolation": lambda value: None if value in INTERPOLATION_NAMES else f"must be one of {', '.join(INTERPOLATION_NAMES)}",
    "mean": _three_numbers(positive=False),
    "std": _three_numbers(positive=True),
}


def check_model_json(content: Any, origin: str) -> None:
    """Check ``model.json`` content against :data:`FIELDS` and :data:`PREPROCESSING`.

    Required fields that are missing are left to :meth:`BestModelInfo.from_dict` to name.

    :param content: the parsed JSON.
    :param origin: the file, for the message.
    :raises RunDirError: naming the first field that is wrong, its value and what it must be.
    """
    if not isinstance(content, dict):
        _fail(origin, "", content, "must be a JSON object")
    for name, check in FIELDS.items():
        if name in content and (problem := check(content[name])):
            _fail(origin, name, content[name], problem)
    preprocessing = content.get("preprocessing", {})
    for name, check in PREPROCESSING.items():
        if name not in preprocessing:
            _fail(origin, f"preprocessing.{name}", None, "is missing")
        if problem := check(preprocessing[name]):
            _fail(origin, f"preprocessing.{name}", preprocessing[name], problem)
    names, count = content.get("class_names"), content.get("num_classes")
    if names is not None and count is not None:
        if len(names) != count:
            _fail(origin, "class_names", names, f"names {len(names)} classes but num_classes is {count}")
        if len(set(names)) != len(names):
            _fail(origin, "class_names", names, "names a class twice")


def _fail(origin: str, field: str, value: Any, problem: str) -> None:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    what = f"{field} ({shown}) {problem}" if field else problem
    raise RunDirError(
        f"{origin}: {what}; the file was edited or damaged: restore the model.json the search wrote, "
        "or rebuild the best model with `automl-transfer repair RUN_DIR`"
    )
