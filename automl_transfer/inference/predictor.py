"""Using a best model: rebuild it from its run directory and classify images.

The network is rebuilt from ``model.json`` through the same plugins that trained it (the
backbone with random weights, then every weight from ``model.safetensors``), and images go
through the same :func:`~automl_transfer.data.images.read_image` and
:func:`~automl_transfer.data.images.resize_to_tensor` as in training.

Example::

    model = load_model("runs/digits")
    for prediction in model.predict(["cat.jpg", "photos/"]):
        print(prediction.path, prediction.label, prediction.score)

For many images, :meth:`LoadedModel.predict_batches` yields the predictions batch by batch as
they are made, and can skip unreadable images, reporting each one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import torch
from PIL import Image

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.data.image_files import is_image_file
from automl_transfer.data.images import UnreadableImageError, read_image, resize_to_tensor
from automl_transfer.errors import AutoMLTransferError, DatasetError, RunDirError
from automl_transfer.model.network import TransferModel
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import build_backbone
from automl_transfer.registry import get_component
from automl_transfer.storage.checkpoint import INFO_FILE, load_best, resolve_best_dir
from automl_transfer.storage.model_info import BestModelInfo
from automl_transfer.training.devices import resolve_device

#: What :meth:`LoadedModel.predict` accepts: an image file or a folder of them, a PIL image,
#: an image tensor ``(C, H, W)`` or a batch ``(B, C, H, W)``, or a list of any of these.
PredictInput = Union[str, os.PathLike, Image.Image, torch.Tensor, Iterable[Any]]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The class a model gives one image.

    :param label: the name of the most probable class.
    :param score: its softmax probability, in ``[0, 1]``.
    :param index: its index in the model's ``class_names``.
    :param path: the image file, or ``None`` for an image given in memory.
    """

    label: str
    score: float
    index: int
    path: str | None = None


@dataclass(frozen=True)
class ImageInput:
    """One image waiting to be classified: a file, a PIL image or an image tensor.

    :param image: the file path, PIL image or ``(C, H, W)`` tensor.
    :param path: the file's path as given, or ``None`` for an image in memory.
    """

    image: Path | Image.Image | torch.Tensor
    path: str | None


class LoadedModel:
    """A best model ready to classify images.

    :param model: the network, in eval mode on ``device``.
    :param info: the ``model.json`` content.
    :param device: where ``model`` lives and inputs are sent.

    Attributes: ``model``, ``info``, ``device``, ``class_names``, ``image_size`` and
    ``interpolation`` (the preprocessing the model was trained with).
    """

    def __init__(self, model: TransferModel, info: dict[str, Any], device: torch.device):
        self.model = model
        self.info = info
        self.device = device
        self.class_names: list[str] = list(info["class_names"])
        self.image_size: int = int(info["preprocessing"]["image_size"])
        self.interpolation: str = info["preprocessing"]["interpolation"]

    def predict(self, inputs: PredictInput, batch_size: int = 64, skip_bad_images: bool = False) -> list[Prediction]:
        """Classify images.

        :param inputs: an image file path, a folder (its image files, recursively, sorted by
            path), a PIL image, an image tensor ``(C, H, W)`` with 1 or 3 channels (``uint8``,
            or float in ``[0, 1]``), a batch ``(B, C, H, W)``, or a list of any of these.
            Files and PIL images are resized and centre-cropped exactly as in training;
            tensors already ``image_size`` square are used as they are, others go the same
            way as PIL images.
        :param batch_size: how many images go through the network at once.
        :param skip_bad_images: leave out image files that cannot be read (logging a warning
            for each) instead of raising.
        :returns: one :class:`Prediction` per image, in input order.
        :raises DatasetError: naming a path that does not exist or is not a regular file, or a folder without images,
            before anything is classified; or the first image file that cannot be read.
        :raises ValueError: for a tensor that is not an image or a batch of images.
        :raises TypeError: for an input of another type.
        """
        on_bad_image = _log_skipped if skip_bad_images else None
        images = expand_inputs(inputs)
        return [prediction for batch in self.predict_batches(images, batch_size, on_bad_image) for prediction in batch]

    def predict_batches(
        self,
        images: Sequence[ImageInput],
        batch_size: int = 64,
        on_bad_image: Callable[[UnreadableImageError], None] | None = None,
    ) -> Iterator[list[Prediction]]:
        """Classify ``images`` batch by batch, yielding each batch's predictions as soon as they are made.

        :param images: what :func:`expand_inputs` returned.
        :param batch_size: how many images go through the network at once.
        :param on_bad_image: called with the error of each image file that cannot be read,
            which is then left out; ``None`` raises it instead.
        :returns: an iterator of lists of :class:`Prediction`, one list per batch, in input
            order (a list is shorter, or empty, when images of its batch were left out).
        :raises UnreadableImageError: an image file cannot be read and ``on_bad_image`` is ``None``;
            the predictions of the images before it in its batch are yielded first.
        :raises ValueError: for a ``batch_size`` below 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        for start in range(0, len(images), batch_size):
            chunk, pixels = [], []
            for item in images[start : start + batch_size]:
                try:
                    pixels.append(self._to_input(item.image))
                except UnreadableImageError as error:
                    if on_bad_image is None:
                        if chunk:  # every image before the bad one is classified and reported
                            yield self._classify(chunk, pixels)
                        raise
                    on_bad_image(error)
                    continue
                chunk.append(item)
            yield self._classify(chunk, pixels) if chunk else []

    def _classify(self, chunk: list[ImageInput], pixels: list[torch.Tensor]) -> list[Prediction]:
        """Run one batch through the network."""
        batch = torch.stack(pixels).to(self.device)
        with torch.inference_mode():
            probabilities = self.model(batch).float().softmax(dim=1).cpu()
        scores, indices = probabilities.max(dim=1)
        return [
            Prediction(self.class_names[index], score, index, item.path)
            for item, score, index in zip(chunk, scores.tolist(), indices.tolist())
        ]

    def _to_input(self, image: Path | Image.Image | torch.Tensor) -> torch.Tensor:
        """Turn one image into the float ``(3, S, S)`` tensor in ``[0, 1]`` the model takes."""
        if isinstance(image, torch.Tensor):
            if image.shape[-2:] == (self.image_size, self.image_size):
                pixels = image.expand(3, -1, -1)
                return pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
            image = _tensor_to_pil(image)
        sized = resize_to_tensor(read_image(image), self.image_size, self.interpolation)
        return sized.float() / 255


def load_model(path: str | os.PathLike[str], device: str | torch.device = "auto") -> LoadedModel:
    """Rebuild the best model of a run for prediction.

    ``model.json`` is checked against its schema first, and the network is sketched on the
    meta device (no memory) and compared with the weights file before it is built for real,
    so an edited or foreign file costs one error line, never gigabytes.

    :param path: a run directory, its ``best`` directory, or a file in it.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    :returns: the model in eval mode on ``device``.
    :raises RunDirError: when there is no best model yet, its files are damaged or missing,
        ``model.json`` breaks its schema, or the rebuilt network does not fit the saved weights.
    :raises UnknownComponentError: when the plugin that provided the backbone or head is
        not installed any more.
    :raises AutoMLTransferError: for a device this machine does not have.
    """
    target = resolve_device(device)
    content, state = load_best(path)
    info = BestModelInfo.from_dict(content, origin=str(resolve_best_dir(path) / INFO_FILE))
    try:
        with torch.device("meta"):
            sketch = _build_network(info, path)
    except AutoMLTransferError:
        raise
    except Exception:  # a builder that cannot run on the meta device: the real build below checks the fit
        sketch = None
    if sketch is not None:
        _check_fit({name: tuple(tensor.shape) for name, tensor in sketch.state_dict().items()}, state, info, path)
    model = _build_network(info, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        _misfit(info, path, " ".join(str(error).split()))
    return LoadedModel(model.to(target).eval(), content, target)


def _build_network(info: BestModelInfo, where: str | os.PathLike[str]) -> TransferModel:
    """Build the network ``model.json`` describes, with random weights, on the current default device.

    :raises RunDirError: the head cannot be built with the recorded ``head_params``.
    """
    backbone = build_backbone(SourceSpec(info.backbone_plugin, info.architecture, NO_WEIGHTS))
    try:
        head = get_component("head", info.head).build(backbone.num_features, info.num_classes, **info.head_params)
    except AutoMLTransferError:
        raise
    except Exception as error:
        raise RunDirError(
            f"head {info.head!r} of the model in {where} cannot be built with head_params {info.head_params}: "
            f"{type(error).__name__}: {error}; restore the model.json the search wrote"
        ) from None
    preprocessing = info.preprocessing
    return TransferModel(backbone.module, head, preprocessing["mean"], preprocessing["std"])


def _check_fit(shapes: dict[str, tuple], state: dict[str, torch.Tensor], info: BestModelInfo, where: Any) -> None:
    """Compare the sketched network's weight names and shapes with the file's.

    :raises RunDirError: naming the first difference.
    """
    for name in sorted(set(shapes) | set(state)):
        found = tuple(state[name].shape) if name in state else None
        if shapes.get(name) != found:
            expected = "nothing" if name not in shapes else f"shape {list(shapes[name])}"
            _misfit(info, where, f"{name}: the file holds {'nothing' if found is None else f'shape {list(found)}'}, "
                                 f"the network needs {expected}")


def _misfit(info: BestModelInfo, where: Any, problem: str) -> None:
    raise RunDirError(
        f"the weights in {where} do not fit a rebuilt {info.backbone_plugin}:{info.architecture} with head "
        f"{info.head!r} ({problem}); model.json was edited, or the plugin changed since the search: restore the "
        "model.json the search wrote, or reinstall the plugin version it used"
    )


def expand_inputs(inputs: PredictInput) -> list[ImageInput]:
    """List every image in ``inputs`` (folders searched recursively), checking that each path exists.

    Nothing is decoded yet, so this is quick even for many files.

    :raises DatasetError: a path that does not exist or is neither a folder nor a regular file, or a
        folder without image files.
    :raises ValueError: a tensor that is not an image or a batch of images.
    :raises TypeError: an input of another type.
    """
    if isinstance(inputs, (str, os.PathLike, Image.Image, torch.Tensor)):
        inputs = [inputs]
    items: list[ImageInput] = []
    for entry in inputs:
        if isinstance(entry, Image.Image):
            items.append(ImageInput(entry, None))
        elif isinstance(entry, torch.Tensor):
            items.extend(ImageInput(image, None) for image in _tensor_images(entry))
        elif isinstance(entry, (str, os.PathLike)):
            items.extend(ImageInput(path, str(path)) for path in _image_files(Path(entry)))
        else:
            raise TypeError(f"cannot classify a {type(entry).__name__}: give paths, PIL images or image tensors")
    return items


def _log_skipped(error: UnreadableImageError) -> None:
    logger.warning("warning: skipped unreadable image %s: %s", error.path, error.reason)


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            found
            for found in path.rglob("*")
            if found.is_file() and is_image_file(found) and not _is_hidden(found.relative_to(path))
        )
        if not files:
            raise DatasetError(f"folder {path} holds no image files: give image files or folders of them")
        return files
    if not path.exists():
        raise DatasetError(f"image {path} does not exist")
    if not path.is_file():
        raise DatasetError(f"{path} is not a regular file (a device, a pipe or a socket); give image files or folders")
    return [path]


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _tensor_images(tensor: torch.Tensor) -> list[torch.Tensor]:
    if tensor.dim() == 4:
        images = list(tensor.unbind(0))
    elif tensor.dim() == 3:
        images = [tensor]
    else:
        raise ValueError(f"an image tensor has shape (C, H, W) or (B, C, H, W), not {tuple(tensor.shape)}")
    if images and images[0].shape[0] not in (1, 3):
        raise ValueError(f"an image tensor has 1 or 3 channels first, not shape {tuple(tensor.shape)}")
    return [image.detach().cpu() for image in images]


def _tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Turn a ``(C, H, W)`` image tensor (``uint8``, or float in ``[0, 1]``) into an RGB PIL image."""
    if image.dtype != torch.uint8:
        image = (image.float() * 255).round().clamp(0, 255).to(torch.uint8)
    pixels = image.expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(pixels)
