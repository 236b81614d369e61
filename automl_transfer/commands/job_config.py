"""Job files: every ``search`` flag can come from a YAML file given with ``--config``."""

from __future__ import annotations

import dataclasses
import difflib
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
    :raises AutoMLTransferError: the file is missing, not YAML, not a mapping, or has an unknown key.
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
        job[name] = value
    return job


def merge_job(job: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Return the job file's values overridden by every flag given on the command line (not ``None``)."""
    merged = dict(job)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged
