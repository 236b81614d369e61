"""Loading local weight files into a backbone, safely.

A source written ``PLUGIN:MODEL@path/to/file`` names weights on disk. The core, not the
backbone plugin, reads that file: the plugin builds its model with random weights
(``"none"``) and :func:`load_weights_file` plus :func:`apply_backbone_weights` put the
file's tensors into it. There are three reasons for this split:

* One safe path for every backbone plugin, third-party ones included: a plugin author
  never writes file-loading code, so no plugin can load a file unsafely.
* Only tensors are read. ``.safetensors`` files hold nothing else; ``.pt``/``.pth`` files
  are read with ``torch.load(weights_only=True)`` and refused when they need any other
  pickled object, which is never executed.
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
from automl_transfer.model.source_spec import WEIGHTS_SUFFIXES

#: The ``format`` metadata value of the best-model files automl-transfer writes.
OWN_FORMAT = "automl_transfer"

#: The environment variable that makes some torch versions ignore ``weights_only=True``.
FORCE_UNSAFE_LOAD_VARIABLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"

#: Keys a checkpoint may nest its state dict under (``torch.save({"state_dict": ...})``).
NESTED_STATE_KEYS = ("state_dict", "model")

#: How many key names an error message lists before summarising the rest.
LISTED_KEYS = 8


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local weight file into a state dict of CPU tensors, executing nothing.

    ``.safetensors`` files are read with safetensors. ``.pt``/``.pth`` files are read with
    ``torch.load(weights_only=True)``; a state dict nested under ``"state_dict"`` or
    ``"model"`` is unwrapped. A best-model file written by automl-transfer (safetensors
    metadata ``{"format": "automl_transfer"}``, keys ``backbone.*`` and ``head.*``) yields
    its backbone's tensors with the ``backbone.`` prefix removed.

    :param path: the file, relative to the working directory or absolute.
    :returns: parameter and buffer names mapped to tensors.
    :raises WeightsError: the file is missing, has an unsupported suffix, is corrupt, needs
        pickled objects beyond tensors, or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.
    """
    file = Path(os.path.expanduser(path))
    if not file.is_file():
        raise WeightsError(f"weights file {str(file)!r} not found (resolved to {file.resolve()})")
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(file)
    if suffix in (".pt", ".pth"):
        return _load_torch_file(file)
    raise WeightsError(
        f"cannot read weights file {str(file)!r}: its name must end in {', '.join(WEIGHTS_SUFFIXES)}; "
        "convert other formats to .safetensors"
    )


def apply_backbone_weights(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> list[str]:
    """Copy ``state`` into ``module``, dropping the keys ``module`` does not have.

    Keys the module lacks are the old classifier (``fc.*``, ``head.*``) of the model the
    weights were trained with; they are dropped, whatever their shape. Every parameter and
    buffer the module has must be present with the module's shape.

    :param module: the backbone module, built with random weights.
    :param state: tensors by name, as :func:`load_weights_file` returns them.
    :param origin: where the weights came from (a file name), for error messages.
    :returns: the sorted names of the dropped keys.
    :raises WeightsError: naming the keys the file lacks, or the keys whose shapes differ
        from the module's (weights made for another architecture).
    """
    expected = module.state_dict()
    # Batch-norm counters are bookkeeping, not weights; files saved by older tools omit them.
    missing = [name for name in expected if name not in state and not name.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(
            f"{origin} lacks {len(missing)} of the backbone's weights: {_list_keys(missing)}; "
            "it was probably saved from another architecture; give the model it was trained as"
        )
    mismatched = [
        f"{name} {tuple(state[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if mismatched:
        raise WeightsError(
            f"{origin} does not fit the architecture, shapes in the file vs the model: "
            f"{_list_keys(mismatched)}; give the model the weights were trained as"
        )
    dropped = sorted(name for name in state if name not in expected)
    module.load_state_dict({name: tensor for name, tensor in state.items() if name in expected}, strict=False)
    return dropped


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
        raise WeightsError(f"cannot read {file} as a torch state dict: {error}") from error
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


def _list_keys(keys: list[str]) -> str:
    listed = ", ".join(keys[:LISTED_KEYS])
    if len(keys) > LISTED_KEYS:
        listed += f" and {len(keys) - LISTED_KEYS} more"
    return listed
