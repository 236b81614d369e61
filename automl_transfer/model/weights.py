"""Loading local weight files into a backbone, safely.

A source written ``PLUGIN:MODEL@path/to/file`` names weights on disk. The core, not the
backbone plugin, reads that file: the plugin builds its model with random weights
(``"none"``) and :func:`load_weights_file` plus :func:`apply_backbone_weights` put the
file's tensors into it. There are three reasons for this split:

* One safe path for every backbone plugin, third-party ones included: a plugin author
  never writes file-loading code, so no plugin can load a file unsafely.
* Only tensors are read. ``.safetensors`` files hold nothing else; ``.pt``/``.pth``/``.bin``
  files are read with ``torch.load(weights_only=True)`` and refused when they need any other
  pickled object, which is never executed.
* One place fits a file's names to the model, whatever layout it was saved in (wrapped,
  prefixed, torchvision's or EfficientNet-PyTorch's names, a plugin's layout): see
  :mod:`automl_transfer.model.layouts`.
* The same loader reads our own best-model files (``model.safetensors`` written by
  :mod:`automl_transfer.storage.checkpoint`), so a search can transfer from an earlier search's
  best model.

timm 1.0.31 can load a file itself (``pretrained_cfg_overlay=dict(file=...)``), but that
path only exists for timm models and accepts whatever ``torch.load`` accepts there; the
core's loader gives every plugin the same checks and the same error messages.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from automl_transfer.errors import WeightsError
from automl_transfer.model.layouts import FittedWeights, fit_weights, list_keys
from automl_transfer.model.source_spec import WEIGHTS_SUFFIXES

#: The ``format`` metadata value of the best-model files automl-transfer writes.
OWN_FORMAT = "automl_transfer"

#: The environment variable that makes some torch versions ignore ``weights_only=True``.
FORCE_UNSAFE_LOAD_VARIABLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"

#: Keys a checkpoint may nest its state dict under (``torch.save({"state_dict": ...})``, Lightning,
#: training loops that save ``{"epoch": ..., "model_state_dict": ...}``).
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")

#: The suffixes of files read with ``torch.load`` (``pytorch_model.bin`` is Hugging Face's name).
TORCH_SUFFIXES = tuple(suffix for suffix in WEIGHTS_SUFFIXES if suffix != ".safetensors")


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local weight file into a state dict of CPU tensors, executing nothing.

    ``.safetensors`` files are read with safetensors (Hugging Face's ``model.safetensors``
    included). ``.pt``, ``.pth`` and ``.bin`` files (``pytorch_model.bin``) are read with
    ``torch.load(weights_only=True)``; a state dict nested under ``"state_dict"``,
    ``"model_state_dict"`` or ``"model"`` (Lightning and training-loop checkpoints) is
    unwrapped. A best-model file written by automl-transfer (safetensors metadata
    ``{"format": "automl_transfer"}``, keys ``backbone.*`` and ``head.*``) yields its
    backbone's tensors with the ``backbone.`` prefix removed. Names are not matched to a model
    here: :func:`apply_backbone_weights` does that.

    :param path: the file, relative to the working directory or absolute.
    :returns: parameter and buffer names mapped to tensors.
    :raises WeightsError: the file is missing, a directory or not a regular file, empty, has an
        unsupported suffix, is corrupt, needs pickled objects beyond tensors, holds integer
        (quantized) weights, or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.
    """
    file = Path(os.path.expanduser(path))
    _check_regular_file(file)
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        state = _load_safetensors(file)
    elif suffix in TORCH_SUFFIXES:
        state = _load_torch_file(file)
    else:
        raise WeightsError(
            f"cannot read weights file {str(file)!r}: its name must end in {', '.join(WEIGHTS_SUFFIXES)}; "
            "convert other formats to .safetensors"
        )
    _refuse_integer_weights(state, file)
    return state


def apply_backbone_weights(
    module: nn.Module, state: dict[str, torch.Tensor], origin: str, architecture: str = ""
) -> FittedWeights:
    """Copy ``state`` into ``module``, renamed to fit it (see :func:`~automl_transfer.model.layouts.fit_weights`).

    Names the module lacks are the old classifier (``fc.*``, ``head.*``) of the model the
    weights were trained with; they are dropped, whatever their shape. Every parameter and
    buffer the module has must be filled with the module's shape, with floating-point values
    where the module has them, all finite.

    :param module: the backbone module, built with random weights.
    :param state: tensors by name, as :func:`load_weights_file` returns them.
    :param origin: where the weights came from (a file name), for error messages.
    :param architecture: the backbone's architecture name, handed to the weights layouts.
    :returns: the fitted tensors, how they were matched and the dropped names.
    :raises WeightsError: no layout fits (naming what was tried and the keys that differ), or
        the fitted tensors hold integers where the module has floats, or NaN or infinity.
    """
    fitted = fit_weights(state, module, architecture or type(module).__name__, origin)
    expected = module.state_dict()
    integer = [
        f"{name} ({tensor.dtype})"
        for name, tensor in fitted.state.items()
        if expected[name].is_floating_point() and not tensor.is_floating_point()
    ]
    if integer:
        raise WeightsError(
            f"{origin} holds integer tensors where the model has floating-point weights: {list_keys(integer)}; "
            "it is probably quantized: give the float checkpoint it was made from"
        )
    non_finite = [
        name for name, tensor in fitted.state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if non_finite:
        raise WeightsError(
            f"{origin} holds NaN or infinite values in {len(non_finite)} tensor(s): {list_keys(non_finite)}; "
            "the file is damaged or its training diverged: give another checkpoint"
        )
    module.load_state_dict(fitted.state, strict=False)
    return fitted


def _check_regular_file(file: Path) -> None:
    """Refuse a path that is missing, a directory, not a regular file, or empty, saying which."""
    if not file.exists():
        raise WeightsError(f"weights file {str(file)!r} not found (resolved to {file.resolve()})")
    if file.is_dir():
        raise WeightsError(f"weights file {str(file)!r} is a directory, not a file; give the weights file inside it")
    if not file.is_file():
        raise WeightsError(
            f"weights file {str(file)!r} is not a regular file (a FIFO, a device or a socket); give a file on disk"
        )
    if file.stat().st_size == 0:
        raise WeightsError(
            f"weights file {str(file)!r} is empty (0 bytes): a download or copy probably did not finish; "
            "fetch or copy it again"
        )


def _refuse_integer_weights(state: dict[str, torch.Tensor], file: Path) -> None:
    """Refuse integer or boolean ``*.weight``/``*.bias`` tensors (quantized checkpoints), which would be cast silently."""
    integer = [
        f"{name} ({tensor.dtype})"
        for name, tensor in state.items()
        if name.endswith((".weight", ".bias")) and not (tensor.is_floating_point() or tensor.is_complex())
    ]
    if integer:
        raise WeightsError(
            f"weights file {file} holds integer weights: {list_keys(integer)}; it is probably quantized, and "
            "casting it to floats would give a wrong model: give the float checkpoint it was made from"
        )


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(file, framework="pt") as opened:
            metadata = opened.metadata() or {}
        state = load_file(file, device="cpu")
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"cannot read {file} as safetensors: {error}") from error
    if metadata.get("format") != OWN_FORMAT:
        return state
    prefix = "backbone."
    backbone = {name.removeprefix(prefix): tensor for name, tensor in state.items() if name.startswith(prefix)}
    if not backbone:
        raise WeightsError(f"{file} is an automl-transfer model file but holds no backbone.* weights")
    return backbone


def _load_torch_file(file: Path) -> dict[str, torch.Tensor]:
    forced = os.environ.get(FORCE_UNSAFE_LOAD_VARIABLE, "").strip().lower()
    if forced not in ("", "0", "false", "no", "n"):
        raise WeightsError(
            f"refusing to read {file}: {FORCE_UNSAFE_LOAD_VARIABLE} is set, which can make torch run "
            f"code stored in the file; unset it, or convert the file to .safetensors"
        )
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"refusing to read {file}: it needs pickled Python objects beyond tensors, which could run "
            "code; nothing from it was executed. Save only the state dict "
            "(torch.save(model.state_dict(), ...)) or convert it to .safetensors"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        reason = str(error).strip() or f"{type(error).__name__} (the file ends too early)"
        raise WeightsError(f"cannot read {file} as a torch state dict: {reason}") from error
    for key in NESTED_STATE_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise WeightsError(
            f"{file} does not hold a state dict (names mapped to tensors); "
            "save it with torch.save(model.state_dict(), ...)"
        )
    return loaded
