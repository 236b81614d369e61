"""Devices: the ``--device`` text (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a ``torch.device``, and freeing memory."""

from __future__ import annotations

import gc
import re
from collections.abc import Sequence

import torch

from automl_transfer.errors import AutoMLTransferError

_CUDA_PATTERN = re.compile(r"cuda(?::(\d+))?")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Return the device ``spec`` names, checked against what this machine has.

    :param spec: ``"auto"`` (the current CUDA device when there is one, else the CPU),
        ``"cpu"``, ``"cuda"`` (the current CUDA device) or ``"cuda:N"``; a ``torch.device``
        is checked the same way.
    :returns: a ``torch.device``; a CUDA device always carries its index.
    :raises AutoMLTransferError: an unknown spec, or a CUDA device this machine does not
        have; the message names the devices that are available.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_PATTERN.fullmatch(text)
    if match is None:
        raise AutoMLTransferError(
            f"unknown device {str(spec)!r}: use auto, cpu, cuda or cuda:N (available: {_available()})"
        )
    if not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise AutoMLTransferError(
            f"device {text!r} was asked for but {build}; available: {_available()}. Use --device cpu or auto"
        )
    index = torch.cuda.current_device() if match.group(1) is None else int(match.group(1))
    if index >= torch.cuda.device_count():
        raise AutoMLTransferError(f"device {text!r} does not exist; available: {_available()}")
    return torch.device("cuda", index)


def worker_devices(devices: str | Sequence[str] | None, device: str = "auto") -> list[str]:
    """Return the devices a search's workers run on, checked with :func:`resolve_device`.

    :param devices: ``--devices``: comma-separated text or a list; ``None`` when not given.
    :param device: ``--device``, used when ``devices`` names none.
    :returns: the devices of ``devices``; else every GPU when ``device`` is ``auto`` and there
        are GPUs; else ``device``.
    :raises AutoMLTransferError: as :func:`resolve_device`.
    """
    if devices is not None:
        listed = devices.split(",") if isinstance(devices, str) else devices
        names = [name.strip() for name in listed if name.strip()] or [device]
        return [str(resolve_device(name)) for name in names]
    resolved = resolve_device(device)
    if device == "auto" and resolved.type == "cuda":
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [str(resolved)]


def _available() -> str:
    """Name every device this machine offers, for error messages."""
    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ", ".join(["cpu", *cuda])


def release_memory(device: torch.device) -> None:
    """Give a GPU back the memory finished work held (garbage collection, then CUDA's cache).

    On the CPU reference counting already frees a trial's tensors; a full collection there
    would only cost time (about half a second in a large process), so nothing is done.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
