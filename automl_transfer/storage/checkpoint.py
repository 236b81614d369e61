"""The best model of a run directory, kept complete at every moment.

A run directory holds its best model as ``best/model.safetensors`` (the ``state_dict`` of a
:class:`~automl_transfer.model.network.TransferModel`) and ``best/model.json`` (everything needed to
rebuild and use it, see :class:`BestModelInfo`). ``best`` is a symbolic link to a directory
under ``.best/``::

    run_dir/
        best -> .best/1732262400000000000-4242-a1b2c3
        .best/1732262400000000000-4242-a1b2c3/model.safetensors
        .best/1732262400000000000-4242-a1b2c3/model.json
        .best.lock

A new best model is written into a fresh directory under ``.best/`` and synced to disk;
only then is ``best`` switched to it, by renaming a new link over the old one, which POSIX
makes atomic. A process killed at any moment therefore leaves ``best`` pointing at either
the previous complete model or the new complete one; the half-written directory it leaves
behind is removed by the next save. Writers in different processes (parallel workers)
take turns through an exclusive ``flock`` on ``.best.lock``.

Example::

    if save_best_if_better(run_dir, model, info, value=0.93, direction="maximize"):
        print("new best model in", run_dir / "best")
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from automl_transfer.errors import RunDirError
from automl_transfer.storage.atomic import fsync_dir
from automl_transfer.storage.model_info import FORMAT_VERSION, BestModelInfo, as_info

#: Metadata stored in every ``model.safetensors`` we write; the weights loader recognises
#: our files (and so lets a best model seed a new search) by it.
SAFETENSORS_METADATA = {"format": "automl_transfer", "format_version": str(FORMAT_VERSION)}
BEST_LINK = "best"
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
_STORE_DIR = ".best"
_LOCK_FILE = ".best.lock"
_TEMP_LINK_PREFIX = ".best.link-"
_READ_ATTEMPTS = 5
#: How to get a whole best model back, for messages about a damaged one.
REBUILD_ADVICE = (
    "restore it from a backup, or run `automl-transfer repair {run_dir}` to retrain the study's best trial "
    "into a new best/ (the damaged files are kept beside it)"
)


def save_best(run_dir: str | os.PathLike[str], model: nn.Module, info: BestModelInfo | Mapping[str, Any]) -> Path:
    """Make ``model`` the best model of ``run_dir`` unconditionally, atomically.

    :param run_dir: the run directory; created when missing.
    :param model: the trained :class:`~automl_transfer.model.network.TransferModel` (a compiled
        wrapper is unwrapped); its weights are copied to the CPU, the model is not changed.
    :param info: what to record in ``model.json``: a :class:`BestModelInfo` or a dict with its fields.
    :returns: the directory ``best`` now points to.
    :raises ValueError: when ``info`` is a dict with a field :class:`BestModelInfo` lacks.
    :raises RunDirError: when ``run_dir/best`` is not the link this module maintains, or
        ``info`` lacks a required field.
    :raises OSError: when the disk refuses the write (``best`` is then unchanged).
    """
    run_dir = Path(run_dir)
    with _best_lock(run_dir):
        _remove_leftovers(run_dir)
        return _write_and_switch(run_dir, model, as_info(info))


def save_best_if_better(
    run_dir: str | os.PathLike[str],
    model: nn.Module,
    info: BestModelInfo | Mapping[str, Any],
    value: float,
    direction: Any,
) -> bool:
    """Make ``model`` the best model of ``run_dir`` if ``value`` beats the recorded best.

    The comparison and the write happen under one inter-process lock, so workers racing
    each other always leave the truly best model in place.

    :param run_dir: the run directory; created when missing.
    :param model: the trained model, as for :func:`save_best`.
    :param info: what to record in ``model.json``, as for :func:`save_best`; its ``value``
        is replaced by ``value``.
    :param value: the objective value ``model`` reached; a NaN or infinite value never wins.
    :param direction: ``"maximize"`` or ``"minimize"`` (or an ``optuna.study.StudyDirection``).
    :returns: ``True`` when ``model`` was written, ``False`` when the recorded best is at
        least as good. Equal values are told apart by the validation loss in the models'
        ``metrics`` (the lower wins: a validation split of a few images ties often); with
        equal or missing losses the earlier model is kept.
    :raises ValueError: for an unknown ``direction`` or a field :class:`BestModelInfo` lacks.
    :raises RunDirError: when the recorded best cannot be read, ``best`` is not our link,
        or ``info`` lacks a required field.
    """
    maximize = _is_maximize(direction)
    info = as_info(info)
    value = float(value)
    run_dir = Path(run_dir)
    with _best_lock(run_dir):
        _remove_leftovers(run_dir)
        current = read_best_info(run_dir)
        if not _beats(value, info.metrics.get("val_loss"), current, maximize):
            return False
        _write_and_switch(run_dir, model, replace(info, value=value))
        return True


def remove_best(run_dir: str | os.PathLike[str]) -> None:
    """Delete the best model of ``run_dir`` (when a search is started over); no-op without one.

    :param run_dir: the run directory.
    :raises RunDirError: when ``run_dir/best`` is a real directory rather than our link.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    with _best_lock(run_dir):
        best_link = run_dir / BEST_LINK
        _check_link(best_link)
        if best_link.is_symlink():
            best_link.unlink()
            fsync_dir(run_dir)
        _remove_leftovers(run_dir)
        shutil.rmtree(run_dir / _STORE_DIR, ignore_errors=True)


def best_damage(run_dir: str | os.PathLike[str]) -> str | None:
    """Tell what is wrong with the best model of ``run_dir``, without loading its weights.

    :param run_dir: the run directory.
    :returns: ``None`` when it has no best model or a whole one; else the problem, in words
        (a missing or damaged file, a ``model.json`` that breaks its schema ...).
    """
    run_dir = Path(run_dir)
    if not (run_dir / BEST_LINK).is_symlink() and not (run_dir / BEST_LINK).exists():
        return None
    try:
        best_dir = resolve_best_dir(run_dir)
        BestModelInfo.from_dict(_read_info(best_dir / INFO_FILE), origin=str(best_dir / INFO_FILE))
        _read_weights(best_dir / WEIGHTS_FILE, load=False)
    except RunDirError as error:  # the problem, without the advice the caller gives its own way
        return re.split(r"; (?:restore|the file was edited)", str(error), maxsplit=1)[0]
    except OSError as error:
        return f"{error.filename or run_dir / BEST_LINK} cannot be read ({error.strerror or error})"
    return None


def set_aside_best(run_dir: str | os.PathLike[str]) -> Path | None:
    """Move a damaged best model out of the way, keeping its files, so that a whole one can be saved.

    :param run_dir: the run directory.
    :returns: where its files now are (``RUN/best.damaged-<UTC time>``), or ``None`` when there
        was no ``best`` link.
    :raises RunDirError: ``best`` is a real directory rather than our link.
    :raises OSError: the move failed.
    """
    run_dir = Path(run_dir)
    with _best_lock(run_dir):
        best_link = run_dir / BEST_LINK
        _check_link(best_link)
        if not best_link.is_symlink():
            return None
        kept = run_dir / f"{BEST_LINK}.damaged-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
        target = run_dir / os.readlink(best_link)
        if target.is_dir():
            os.rename(target, kept)
        else:
            kept.mkdir()
        best_link.unlink()
        fsync_dir(run_dir)
        return kept


def read_best_info(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the ``model.json`` content of the best model of ``run_dir``.

    :param run_dir: a run directory (its ``best`` directory and the files in it are accepted too).
    :returns: the parsed ``model.json``, or ``None`` when the run has no best model yet
        (or ``run_dir`` does not exist).
    :raises RunDirError: when ``model.json`` is not valid JSON.
    """
    for _ in range(_READ_ATTEMPTS):
        try:
            best_dir = resolve_best_dir(run_dir)
        except RunDirError:
            return None
        try:
            return _read_info(best_dir / INFO_FILE)
        except OSError:
            if not _moved_on(run_dir, best_dir):
                raise
    raise RunDirError(f"the best model in {run_dir} kept changing while being read: try again")


def resolve_best_dir(path: str | os.PathLike[str]) -> Path:
    """Find the directory that holds a best model's two files.

    :param path: a run directory, its ``best`` link, a ``.best/...`` directory, or the
        ``model.json`` / ``model.safetensors`` file inside one.
    :returns: the real directory (links resolved) holding ``model.json`` and ``model.safetensors``.
    :raises RunDirError: when ``path`` does not exist or holds no best model yet.
    """
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path} does not exist: give the run directory a search wrote to")
    if path.is_file():
        path = path.parent
    if not (path / INFO_FILE).is_file() and (path / BEST_LINK).is_symlink():
        if not (path / BEST_LINK / INFO_FILE).is_file():
            raise RunDirError(
                f"the best model in {path / BEST_LINK} is damaged: {INFO_FILE} is missing; "
                + REBUILD_ADVICE.format(run_dir=path)
            )
        path = path / BEST_LINK
    if not (path / INFO_FILE).is_file():
        raise RunDirError(f"no best model in {path} yet: run `automl-transfer search ...` first")
    return path.resolve()


def load_best(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a best model's ``model.json`` and weights, guaranteed to belong together.

    Reading is lock-free: when a concurrent save replaces and removes the directory being
    read, the read starts again from the new ``best``.

    :param path: anything :func:`resolve_best_dir` accepts.
    :returns: ``(info, state_dict)``, the state dict on the CPU.
    :raises RunDirError: when there is no best model, or its files are not ours or damaged.
    """
    for _ in range(_READ_ATTEMPTS):
        best_dir = resolve_best_dir(path)
        try:
            return _read_info(best_dir / INFO_FILE), _read_weights(best_dir / WEIGHTS_FILE)
        except (OSError, RuntimeError, RunDirError):
            # safetensors reports a file deleted while it opens it as a RuntimeError.
            if not _moved_on(path, best_dir):
                raise
    raise RunDirError(f"the best model in {path} kept changing while being read: try again")


def _moved_on(path: str | os.PathLike[str], best_dir: Path) -> bool:
    """Whether ``best`` no longer points to ``best_dir``: a save replaced it (and may remove it)."""
    try:
        return resolve_best_dir(path) != best_dir
    except RunDirError:
        return False


def _read_info(info_path: Path) -> dict[str, Any]:
    advice = REBUILD_ADVICE.format(run_dir=_run_dir_of(info_path))
    try:
        content = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{info_path} is not valid JSON ({error}); {advice}") from None
    except RecursionError:
        raise RunDirError(f"{info_path} is nested too deeply to be a model.json; {advice}") from None
    if not isinstance(content, dict):
        raise RunDirError(f"{info_path} does not hold a JSON object; {advice}")
    return content


def _read_weights(weights_path: Path, load: bool = True) -> dict[str, torch.Tensor]:
    """Read our weights file (every tensor, or with ``load=False`` only its header: empty tensors by name).

    :raises RunDirError: the file is missing, damaged or not ours.
    """
    if not weights_path.is_file():
        raise RunDirError(f"{weights_path} is missing; {REBUILD_ADVICE.format(run_dir=_run_dir_of(weights_path))}")
    try:
        with safe_open(weights_path, framework="pt") as weights:
            metadata = weights.metadata() or {}
            if metadata.get("format") != SAFETENSORS_METADATA["format"]:
                raise RunDirError(f"{weights_path} was not written by automl-transfer (no format metadata)")
            return {name: weights.get_tensor(name) if load else torch.empty(0) for name in weights.keys()}
    except SafetensorError as error:
        raise RunDirError(
            f"{weights_path} is damaged ({error}); {REBUILD_ADVICE.format(run_dir=_run_dir_of(weights_path))}"
        ) from None


def _run_dir_of(path: Path) -> Path:
    """The run dir of a file in ``RUN/.best/<dir>/``."""
    return path.parent.parent.parent if path.parent.parent.name == _STORE_DIR else path.parent


def _is_maximize(direction: Any) -> bool:
    name = str(getattr(direction, "name", direction)).lower()
    if name not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    return name == "maximize"


def _beats(value: float, val_loss: Any, current: Mapping[str, Any] | None, maximize: bool) -> bool:
    """Whether a model scoring ``value`` (validation loss ``val_loss``) beats the ``current`` best's model.json."""
    if not math.isfinite(value):
        return False
    current_value = None if current is None else current.get("value")
    if not _finite(current_value):
        return True
    if value != current_value:
        return value > current_value if maximize else value < current_value
    current_loss = current.get("metrics", {}).get("val_loss")
    return _finite(val_loss) and _finite(current_loss) and val_loss < current_loss


def _finite(number: Any) -> bool:
    return isinstance(number, (int, float)) and math.isfinite(number)


@contextmanager
def _best_lock(run_dir: Path) -> Iterator[None]:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(run_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunDirError(f"cannot write to run directory {run_dir}: {error.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)


def _write_and_switch(run_dir: Path, model: nn.Module, info: BestModelInfo) -> Path:
    _check_link(run_dir / BEST_LINK)
    info_text = json.dumps(info.to_dict(), indent=2, allow_nan=False) + "\n"  # fails before touching the disk
    store = run_dir / _STORE_DIR
    store.mkdir(exist_ok=True)
    model_dir = store / f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}"
    model_dir.mkdir()
    try:
        _write_model_files(model_dir, model, info_text)
        fsync_dir(store)
    except BaseException:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise

    temp_link = run_dir / f"{_TEMP_LINK_PREFIX}{model_dir.name}"
    os.symlink(Path(_STORE_DIR) / model_dir.name, temp_link)
    os.replace(temp_link, run_dir / BEST_LINK)
    fsync_dir(run_dir)
    _remove_leftovers(run_dir)
    return model_dir


def _write_model_files(model_dir: Path, model: nn.Module, info_text: str) -> None:
    """Write and sync both files of a best model into the fresh, not yet visible ``model_dir``."""
    with open(model_dir / INFO_FILE, "x", encoding="utf-8") as info_file:
        info_file.write(info_text)
        info_file.flush()
        os.fsync(info_file.fileno())
    # Serialised in memory and written here, so that a full disk is an OSError naming the file
    # (safetensors' own writer reports it as a SafetensorError).
    weights = save(_cpu_state_dict(model), metadata=SAFETENSORS_METADATA)
    with open(model_dir / WEIGHTS_FILE, "xb") as weights_file:
        weights_file.write(weights)
        weights_file.flush()
        os.fsync(weights_file.fileno())
    fsync_dir(model_dir)


def _check_link(best_link: Path) -> None:
    if best_link.exists() and not best_link.is_symlink():
        raise RunDirError(
            f"{best_link} is a real directory, not the link automl-transfer keeps there: move it away and retry"
        )


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(model, "_orig_mod", model)
    return {
        name: tensor.detach().to(device="cpu", memory_format=torch.contiguous_format, copy=True)
        for name, tensor in module.state_dict().items()
    }


def _remove_leftovers(run_dir: Path) -> None:
    """Remove model directories ``best`` does not point to and stray temporary links (lock held)."""
    best_link = run_dir / BEST_LINK
    current = os.readlink(best_link) if best_link.is_symlink() else None
    keep = Path(current).name if current is not None else None
    store = run_dir / _STORE_DIR
    if store.is_dir():
        for entry in store.iterdir():
            if entry.name == keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    for entry in run_dir.glob(f"{_TEMP_LINK_PREFIX}*"):
        entry.unlink(missing_ok=True)
