"""Taking a best model out of the tool: ONNX or TorchScript, with its preprocessing beside it.

The exported network is the whole :class:`~automl_transfer.model.network.TransferModel`:
it takes float32 RGB images ``(batch, 3, S, S)`` with values in ``[0, 1]`` and returns logits
``(batch, classes)``; the mean/std normalisation is inside it. What happens before (reading,
resizing, cropping, scaling) is written to ``PATH.json`` beside the model file, with the class
names, so the model can be used without automl-transfer:

1. read the image as 8-bit RGB (EXIF orientation applied, transparency composited on white);
2. resize it so that its shorter side is ``image_size`` (the longer side
   ``max(image_size, round(side * image_size / shorter side))``) with ``interpolation``;
3. crop the centre ``image_size`` square (left ``(width - image_size) // 2``, top likewise);
4. divide by 255 into float32, channels first.

The batch size is free in both formats.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from automl_transfer.errors import AutoMLTransferError
from automl_transfer.inference.predictor import LoadedModel, load_model
from automl_transfer.storage.atomic import (
    fsync_dir,
    write_bytes_atomically,
    write_json_atomically,
)

#: The formats :func:`export_model` writes, and the file suffix of each.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
#: The errors of a full disk or quota.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: The names of the exported model's input and output.
INPUT_NAME, OUTPUT_NAME = "images", "logits"
#: The ONNX operator set the exporter targets (onnxruntime 1.17 and later read it).
ONNX_OPSET = 18


def default_output(run_dir: Path, format_name: str) -> Path:
    """Return ``RUN_DIR/export/model.onnx`` (or ``model.pt``) for a run directory.

    :raises AutoMLTransferError: ``run_dir`` is not a run directory (a ``best`` folder, say).
    """
    if not (Path(run_dir) / "best").exists():
        raise AutoMLTransferError(
            f"{run_dir} is not a run directory holding best/; give the run directory, or --output PATH"
        )
    return Path(run_dir) / "export" / f"model{FORMATS[format_name]}"


def export_model(path: str | os.PathLike[str], format_name: str, output: str | os.PathLike[str] | None = None) -> Path:
    """Export the best model of a run, and write its preprocessing to ``OUTPUT.json``.

    :param path: a run directory (or anything :func:`load_model` accepts, with ``output``).
    :param format_name: ``"onnx"`` or ``"torchscript"``.
    :param output: the model file to write; default ``RUN_DIR/export/model.onnx`` or ``model.pt``.
    :returns: the model file written.
    :raises AutoMLTransferError: an unknown format, no best model, an ``output`` that is a folder
        or not a regular file, a place that cannot be written (full, read-only), or (for ONNX) the
        ``onnx`` and ``onnxscript`` packages not installed. A file already at ``output`` is then
        left as it was: each file is written beside its target, synced, and renamed over it.
    """
    if format_name not in FORMATS:
        raise AutoMLTransferError(f"unknown export format {format_name!r}; use one of {', '.join(FORMATS)}")
    target = Path(output) if output is not None else default_output(Path(path), format_name)
    if target.is_dir():
        raise AutoMLTransferError(f"--output {target} is a folder; give the model file's path, such as "
                                  f"{target / ('model' + FORMATS[format_name])}")
    if target.exists() and not target.is_file():
        raise AutoMLTransferError(f"--output {target} is not a regular file (a device, a pipe or a socket); "
                                  "give the path of a file to write")
    loaded = load_model(path, device="cpu")
    example = torch.rand(2, 3, loaded.image_size, loaded.image_size)
    content = _export_onnx(loaded, example) if format_name == "onnx" else _export_torchscript(loaded, example)
    sidecar = target.with_name(target.name + ".json")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, content)
        write_json_atomically(sidecar, describe_export(loaded, format_name, target), sort_keys=False)
        fsync_dir(target.parent)
    except OSError as error:
        fix = "free some space or choose another --output" if error.errno in FULL else "choose another --output"
        raise AutoMLTransferError(
            f"cannot write {error.filename or target}: {error.strerror or error}; {fix} (a file already there is "
            "left as it was)"
        ) from None
    return target


def describe_export(loaded: LoadedModel, format_name: str, target: Path) -> dict[str, Any]:
    """Return what ``OUTPUT.json`` records: the input, output, preprocessing, classes and origin."""
    info = loaded.info
    size = loaded.image_size
    preprocessing = info["preprocessing"]
    return {
        "format": format_name,
        "file": target.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32", "range": [0, 1],
                  "layout": "NCHW, RGB"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(loaded.class_names)],
                   "meaning": "logits; softmax over the last axis gives each class's probability"},
        "preprocessing": {
            "image_size": size,
            "interpolation": loaded.interpolation,
            "steps": [
                "read as 8-bit RGB (EXIF orientation applied, transparency composited on white)",
                "resize so the shorter side is image_size, the longer max(image_size, round(side * image_size / shorter))",
                "crop the centre image_size x image_size square (left = (width - image_size) // 2, top likewise)",
                "divide by 255 into float32, channels first",
            ],
            "mean": preprocessing["mean"],
            "std": preprocessing["std"],
            "normalised_inside_the_model": True,
        },
        "class_names": list(loaded.class_names),
        "source": info.get("source"),
        "trial": info.get("trial"),
        "metric": info.get("metric"),
        "value": info.get("value"),
    }


def _export_onnx(loaded: LoadedModel, example: torch.Tensor) -> bytes:
    """Return the ONNX file's bytes (made in memory, so that only :func:`export_model` writes files)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise AutoMLTransferError(
            f"ONNX export needs the onnx and onnxscript packages ({error.name} is missing); "
            "install them with pip install 'automl-transfer[export]'"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter notices about its internals, none about the model
        program = torch.onnx.export(
            loaded.model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def _export_torchscript(loaded: LoadedModel, example: torch.Tensor) -> bytes:
    """Return the TorchScript file's bytes (made in memory: torch's C++ writer aborts the process on a full disk)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PyTorch deprecates TorchScript for torch.export
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(loaded.model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
