"""Reading one image and turning it into the fixed-size tensor every model input starts as.

Training, evaluation and ``predict`` all go through :func:`read_image` and
:func:`resize_to_tensor`, so an image is preprocessed the same way wherever it is used.

Reading and sizing need only Pillow and numpy: torch is imported by the two functions that
return tensors, so a process that decodes a dataset while the search starts
(:mod:`automl_transfer.data.ahead`) does not load it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from automl_transfer.contract.components import INTERPOLATION_NAMES, ImageItem
from automl_transfer.errors import DatasetError

if TYPE_CHECKING:
    import torch

#: Interpolation names accepted by :func:`resize_to_tensor` (timm's ``data_config`` names).
INTERPOLATIONS = {name: Image.Resampling[name.upper()] for name in INTERPOLATION_NAMES}

_WHITE = (255, 255, 255, 255)

logger = logging.getLogger(__name__)

# read_image reports a large image in one warning line of its own instead of Pillow's raw warning.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float single-channel image into an 8-bit ``L`` image."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    else:
        peak = 65535.0 if values.size and values.max() > 255 else 255.0
    scaled = np.nan_to_num(values / peak * 255.0).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB image, whatever its mode.

    Transparent pixels are composited onto white (the colour stored under a transparent
    pixel is arbitrary); 16-bit and float images are scaled to 8 bits rather than clipped.
    """
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_eight_bits(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


class UnreadableImageError(DatasetError):
    """An image file that is missing, cannot be decoded or is corrupt.

    :param path: the file.
    :param reason: what is wrong with it, without advice (``"image file is truncated"``).
    """

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason}. Fix or delete the file, or pass --skip-bad-images")


def read_image(item: ImageItem, digests: dict[str, str] | None = None) -> Image.Image:
    """Read one dataset item as an RGB PIL image.

    :param item: a path to an image file, or a PIL image already in memory.
    :param digests: when given, the SHA-256 hex digest of a file's bytes is recorded there
        under the file's absolute path (the file is read once for both).
    :returns: an RGB image, turned upright according to its EXIF orientation.
    :raises DatasetError: naming the file when it does not exist.
    :raises UnreadableImageError: naming the file when it is unreadable or corrupt.
    """
    if isinstance(item, Image.Image):
        return to_rgb(item)
    path = Path(item)
    try:
        source: Path | io.BytesIO = path
        if digests is not None:
            data = path.read_bytes()
            digests[os.path.abspath(path)] = hashlib.sha256(data).hexdigest()
            source = io.BytesIO(data)
        with Image.open(source) as opened:
            width, height = opened.size
            if width * height > (Image.MAX_IMAGE_PIXELS or width * height):
                logger.warning("warning: %s is a very large image (%d x %d pixels); decoding it needs about %d MB",
                               path, width, height, width * height * len(opened.getbands()) // 2**20 + 1)
            ImageOps.exif_transpose(opened, in_place=True)  # loads it, turned upright
            return to_rgb(opened)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    # PIL's decoders raise many kinds of exception for malformed files (OSError,
    # SyntaxError, ValueError, struct.error, DecompressionBombError ...).
    except Exception as error:
        raise UnreadableImageError(path, " ".join(str(error).split()).rstrip(".") or type(error).__name__) from None


def resize_to_tensor(image: Image.Image, image_size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize the shorter side of ``image`` to ``image_size`` and crop the centre square.

    :param image: a PIL image in any mode (converted with :func:`to_rgb`).
    :param image_size: the side ``S`` of the square output.
    :param interpolation: one of :data:`INTERPOLATIONS`.
    :returns: a contiguous ``uint8`` tensor of shape ``(3, S, S)``.
    :raises ValueError: for an unknown interpolation or a non-positive size.
    """
    import torch

    _check_sizing(image_size, interpolation)
    return torch.from_numpy(_centre_square(image, image_size, interpolation)).permute(2, 0, 1).contiguous()


def _check_sizing(image_size: int, interpolation: str) -> None:
    """Raise ``ValueError`` for a non-positive ``image_size`` or an unknown ``interpolation``."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, not {image_size}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")


def _centre_square(image: Image.Image, image_size: int, interpolation: str) -> np.ndarray:
    """The centre ``image_size`` square of ``image`` with its shorter side resized to fit: ``uint8 (S, S, 3)``."""
    image = to_rgb(image)
    width, height = image.size
    scale = image_size / min(width, height)
    resized_size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
    if resized_size != image.size:
        image = image.resize(resized_size, INTERPOLATIONS[interpolation])
    if resized_size != (image_size, image_size):
        left = (resized_size[0] - image_size) // 2
        top = (resized_size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    return np.array(image, dtype=np.uint8)


#: Below this many pixels per source image, :func:`decode_into` works in one thread. For small
#: images the Python around each one, which holds the GIL, costs more than the decoding and
#: resizing PIL does with the GIL released, and two threads contending for the GIL are slower
#: than one (2-core CPU, per image: 48 px PNGs 0.44 ms in one thread vs 0.56 ms in two;
#: 96 px 0.55 vs 0.45 ms; 512 px 6.3 vs 3.4 ms).
PARALLEL_MIN_PIXELS = 64 * 64

#: Items a decoding thread takes at a time (one per task would cost a future per image).
DECODE_CHUNK = 32


@dataclass
class DecodeReport:
    """What :func:`decode_into` met besides the images.

    :param skipped: ``(index, "PATH: what is wrong")`` for every unreadable item left out, in order.
    :param resized: whether any image's shorter side differed from the output size, so that its
        pixels depend on the interpolation (when none did, any interpolation gives these pixels).
    """

    skipped: list[tuple[int, str]] = field(default_factory=list)
    resized: bool = False


def _decode_chunk(items: Sequence[tuple[ImageItem, int]], image_size: int, interpolation: str,
                  digests: dict[str, str] | None) -> tuple[list[np.ndarray | DatasetError], bool]:
    """Read and size each item: its ``uint8 (S, S, 3)`` array or the error that made it unreadable,
    and whether any was resized."""
    results: list[np.ndarray | DatasetError] = []
    resized = False
    for item, _ in items:
        try:
            image = read_image(item, digests)
            resized = resized or min(image.size) != image_size
            results.append(_centre_square(image, image_size, interpolation))
        except DatasetError as error:
            results.append(error)
    return results, resized


def _source_pixels(item: ImageItem) -> int:
    """The pixel count of an item as stored (a file's header only is read); 0 when it cannot be read."""
    if isinstance(item, Image.Image):
        return item.width * item.height
    try:
        with Image.open(item) as opened:
            return opened.width * opened.height
    except Exception:  # reported by the decoding itself, naming the file
        return 0


def decode_into(pixels: np.ndarray, items: Sequence[tuple[ImageItem, int]], image_size: int, interpolation: str,
                skip_bad_images: bool = False, on_decoded: Callable[[int], None] | None = None,
                digests: dict[str, str] | None = None) -> DecodeReport:
    """Read and size every item with :func:`read_image` and :func:`resize_to_tensor`'s sizing into ``pixels``.

    Images of at least :data:`PARALLEL_MIN_PIXELS` pixels (judged by the first) are decoded
    by a thread per core, since PIL releases the GIL while it decodes and resizes; smaller
    ones in this thread. Either way the result is the same.

    :param pixels: a writable ``uint8`` array ``(len(items), 3, S, S)``; ``pixels[i]`` receives
        item ``i`` (an unreadable item's row is left as it was).
    :param items: ``(image, label)`` pairs.
    :param image_size: the side ``S`` of the square output images.
    :param interpolation: one of :data:`INTERPOLATIONS`.
    :param skip_bad_images: go on past unreadable images (listed in the report's ``skipped``)
        instead of raising.
    :param on_decoded: called with the number of items handled so far after each one, in order.
    :param digests: when given, filled as :func:`read_image` does: the SHA-256 of each file
        read, by absolute path (what :func:`~automl_transfer.data.datasets.dataset_fingerprint`
        with ``content`` would read the files again for).
    :returns: the :class:`DecodeReport`.
    :raises DatasetError: naming the first unreadable image, unless ``skip_bad_images``.
    :raises ValueError: for an unknown interpolation or a non-positive size.
    """
    _check_sizing(image_size, interpolation)
    report = DecodeReport()
    chunks = [items[start:start + DECODE_CHUNK] for start in range(0, len(items), DECODE_CHUNK)]
    workers = os.cpu_count() or 1
    parallel = workers > 1 and len(chunks) > 1 and _source_pixels(items[0][0]) >= PARALLEL_MIN_PIXELS
    pool = ThreadPoolExecutor(max_workers=workers) if parallel else None
    try:
        decoded = (pool.map(lambda chunk: _decode_chunk(chunk, image_size, interpolation, digests), chunks) if pool
                   else (_decode_chunk(chunk, image_size, interpolation, digests) for chunk in chunks))
        index = 0
        for results, resized in decoded:
            report.resized = report.resized or resized
            for result in results:
                if isinstance(result, DatasetError):
                    if not skip_bad_images:
                        raise result
                    path = getattr(result, "path", items[index][0])
                    report.skipped.append((index, f"{path}: {getattr(result, 'reason', result)}"))
                else:
                    pixels[index] = result.transpose(2, 0, 1)
                index += 1
                if on_decoded is not None:
                    on_decoded(index)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


def decode_images(items: Sequence[tuple[ImageItem, int]], image_size: int, interpolation: str,
                  skip_bad_images: bool = False, on_decoded: Callable[[int], None] | None = None,
                  digests: dict[str, str] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Read and size every item with :func:`decode_into`, into tensors.

    :param items: ``(image, label)`` pairs.
    :param image_size: the side ``S`` of the square output images.
    :param interpolation: one of :data:`INTERPOLATIONS`.
    :param skip_bad_images: leave unreadable images out (logging a warning for each)
        instead of raising.
    :param on_decoded: called with the number of items handled so far after each one, in order.
    :param digests: when given, filled with the SHA-256 of each file read, by absolute path.
    :returns: ``(images, labels, n_skipped)``: ``uint8 (N, 3, S, S)``, ``int64 (N,)`` and the
        number of unreadable images left out.
    :raises DatasetError: naming the first unreadable image, unless ``skip_bad_images``.
    :raises ValueError: for an unknown interpolation or a non-positive size.
    """
    import torch

    _check_sizing(image_size, interpolation)
    images = torch.empty((len(items), 3, image_size, image_size), dtype=torch.uint8)
    # The same memory: a numpy copy per image costs a fifth of a torch one.
    report = decode_into(images.numpy(), items, image_size, interpolation, skip_bad_images, on_decoded, digests)
    return decoded_tensors(images, items, report.skipped)


def decoded_tensors(images: torch.Tensor, items: Sequence[tuple[ImageItem, int]],
                    skipped: Sequence[tuple[int, str]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pair images decoded by :func:`decode_into` with their labels, leaving skipped items out.

    A warning is logged for each skipped item.

    :param images: ``(N, 3, S, S)`` images of ``items``, in order.
    :param items: the ``(image, label)`` pairs they were decoded from.
    :param skipped: the report's ``skipped``.
    :returns: ``(images, labels, n_skipped)``: the labels ``int64 (N,)``, and without the
        skipped rows (the same images tensor when none was skipped).
    """
    import torch

    labels = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
    if not skipped:
        return images, labels, 0
    for _, what in skipped:
        logger.warning("warning: skipped unreadable image %s", what)
    readable = torch.ones(len(labels), dtype=torch.bool)
    readable[[index for index, _ in skipped]] = False
    return images[readable], labels[readable], len(skipped)
