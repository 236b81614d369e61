"""Job files: every ``search`` flag can come from a YAML file given with ``--config``."""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from automl_transfer.errors import AutoMLTransferError
from automl_transfer.search.config import SearchConfig

#: Job-file keys, spelled as the flags are (``run-dir``) or as Python names (``run_dir``).
JOB_KEYS = tuple(field.name for field in dataclasses.fields(SearchConfig))


def read_job_file(path: str | Path) -> dict[str, Any]:
    """Read a job YAML file into ``SearchConfig`` keyword arguments.

    :returns: a dict keyed by ``SearchConfig`` field names.
    :raises AutoMLTransferError: the file is missing, not YAML, not a mapping, or has an unknown
        key or a value of the wrong type.
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise AutoMLTransferError(f"cannot read job file {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise AutoMLTransferError(f"job file {path} is not valid YAML: {error}".replace("\n", " ")) from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise AutoMLTransferError(f"job file {path} must be a mapping of flag names to values")
    job: dict[str, Any] = {}
    for key, value in content.items():
        name = str(key).replace("-", "_")
        if name not in JOB_KEYS:
            close = difflib.get_close_matches(name, JOB_KEYS, n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise AutoMLTransferError(
                f"job file {path}: unknown key {key!r}{hint}; valid keys: {', '.join(k.replace('_', '-') for k in JOB_KEYS)}"
            )
        problem = value_problem(FIELD_TYPES[name], value)
        if problem:
            raise AutoMLTransferError(f"job file {path}: {key} is {value!r}; it must be {problem}")
        job[name] = value
    return job


#: The type each ``SearchConfig`` field takes, which a job-file value must have.
FIELD_TYPES = typing.get_type_hints(SearchConfig)


def value_problem(hint: Any, value: Any) -> str | None:
    """Tell whether a YAML ``value`` fits the type ``hint`` of a ``SearchConfig`` field.

    YAML is strict here where Python would be lenient: ``quiet: "no"`` is text, not false, and
    ``trials: "many"`` is not a number.

    :returns: ``None`` when it fits, else what it must be (``"true or false"``).
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return None
        if option in (str, Path) and isinstance(value, str):
            return None
        if typing.get_origin(option) is collections.abc.Mapping and isinstance(value, dict):
            return None
    return " or ".join(_KIND_NAMES.get(typing.get_origin(option) or option, str(option)) for option in options)


_KIND_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text",
    Path: "a path",
    collections.abc.Mapping: "a mapping",
    type(None): "null",
}


def merge_job(job: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Return the job file's values overridden by every flag given on the command line (not ``None``)."""
    merged = dict(job)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged
