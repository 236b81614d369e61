"""Decoding a dataset in a child process while this one is still starting.

A new search spends its first seconds on one core, importing torch, timm and optuna and
building its sources, before it decodes a single image. :meth:`DecodingAhead.start` forks a
child process before torch is imported; the child decodes every split with
:func:`~automl_transfer.data.images.decode_into` straight into memory it shares with this
process, and :meth:`DecodingAhead.take` hands the images over when they are needed, without
a copy or a file.

``take`` gives exactly the images :func:`~automl_transfer.data.prepare.prepare_data` would
decode itself, or nothing: when the child failed or died, met an unreadable image without
``skip_bad_images``, or was asked for other settings, it returns ``None`` and the caller
decodes as usual. The source model, which chooses the interpolation, is only known once torch
and its library are loaded, so the child uses :data:`LIKELY_INTERPOLATION`; when the source
wants another and some image had to be resized, its work is dropped.

The child is forked only where that is safe and useful (:func:`can_decode_ahead`): on Linux,
with two or more cores, in a process with one thread that has not imported torch.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Callable, Mapping

import numpy as np

from automl_transfer.contract.components import ImageDataset
from automl_transfer.data.datasets import dataset_splits
from automl_transfer.data.images import decode_into, decoded_tensors
from automl_transfer.data.memory import check_memory
from automl_transfer.errors import AutoMLTransferError

if TYPE_CHECKING:
    import torch

#: The interpolation images are decoded with ahead: most of timm's pretrained weights use it
#: (1,659 of 1,826 in timm 1.0); torchvision's use ``bilinear``.
LIKELY_INTERPOLATION = "bicubic"

#: How many progress reports the child sends at most (each is a line in a pipe nobody reads yet).
PROGRESS_REPORTS = 100

logger = logging.getLogger(__name__)


def can_decode_ahead() -> bool:
    """Whether forking a decoding child is safe and can save time here.

    :returns: ``True`` on Linux with two or more usable cores, in a process with a single
        thread (forking copies no lock another thread holds) that has not imported torch yet
        (afterwards there is little start-up left to overlap).
    """
    return (sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= 2
            and threading.active_count() == 1 and "torch" not in sys.modules)


class DecodingAhead:
    """A dataset's images being decoded by a child process; use :meth:`start`.

    Close it (or use it as a context manager) when done: a child whose images were not taken
    is stopped then.

    :param dataset: the dataset being decoded.
    :param fingerprint: its :func:`~automl_transfer.data.datasets.dataset_fingerprint`.
    :param image_size: the side of the square images.
    :param interpolation: the interpolation they are resized with.
    :param skip_bad_images: whether unreadable images are left out (else the child gives up).

    :attr:`pid` is the child's process id while it may run, ``None`` once the handle is closed.
    """

    def __init__(self, dataset: ImageDataset, fingerprint: str, image_size: int, interpolation: str,
                 skip_bad_images: bool):
        self.dataset = dataset
        self.fingerprint = fingerprint
        self.image_size = image_size
        self.interpolation = interpolation
        self.skip_bad_images = skip_bad_images
        self.splits = dataset_splits(dataset)
        count = sum(len(items) for items in self.splits.values())
        self._memory = mmap.mmap(-1, count * 3 * image_size * image_size)  # shared with the child
        self._pixels = np.frombuffer(self._memory, dtype=np.uint8).reshape(count, 3, image_size, image_size)
        self._parent = os.getpid()
        self.pid: int | None = None
        self._reader: IO[bytes] | None = None

    @classmethod
    def start(cls, dataset: ImageDataset, fingerprint: str, image_size: int,
              interpolation: str = LIKELY_INTERPOLATION, skip_bad_images: bool = False) -> DecodingAhead | None:
        """Fork a child that decodes every split of ``dataset`` at ``image_size``.

        :returns: the handle, or ``None`` where :func:`can_decode_ahead` says no, the images
            would not fit in memory (the caller's own decoding then says so), or the system
            refuses another process.
        """
        if not can_decode_ahead():
            return None
        try:
            check_memory(sum(len(items) for items in dataset_splits(dataset).values()), image_size, "")
            ahead = cls(dataset, fingerprint, image_size, interpolation, skip_bad_images)
        except (AutoMLTransferError, OSError):  # OSError: the shared memory was refused
            return None
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:  # the child: decode, report, and leave without running anything of the parent's
            status = 1
            try:
                os.close(read_end)
                status = ahead._decode(write_end)
            finally:
                os._exit(status)
        os.close(write_end)
        ahead.pid, ahead._reader = pid, os.fdopen(read_end, "rb")
        return ahead

    def _decode(self, write_end: int) -> int:
        """The child's work: decode each split into the shared memory, reporting through ``write_end``.

        Writes ``P <done>`` lines as it goes, then ``R <json>`` (skipped images, whether any
        image was resized, the files' SHA-256) or ``F <reason>``. Returns the exit status.
        """
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the child
            with open(write_end, "wb") as out:
                total = len(self._pixels)
                every = max(1, total // PROGRESS_REPORTS)
                digests: dict[str, str] = {}
                report: dict = {"skipped": {}, "resized": False, "digests": digests}
                offset = 0
                for name, items in self.splits.items():

                    def on_decoded(done: int, base: int = offset) -> None:
                        if (base + done) % every == 0 or base + done == total:
                            out.write(b"P %d\n" % (base + done))
                            out.flush()

                    try:
                        decoded = decode_into(self._pixels[offset:offset + len(items)], items, self.image_size,
                                              self.interpolation, self.skip_bad_images, on_decoded, digests)
                    except Exception as error:  # the parent decodes again and reports it
                        out.write(b"F " + " ".join(str(error).split()).encode("utf-8", "replace") + b"\n")
                        return 1
                    report["skipped"][name] = decoded.skipped
                    report["resized"] = report["resized"] or decoded.resized
                    offset += len(items)
                out.write(b"R " + json.dumps(report).encode() + b"\n")  # ASCII: json escapes the rest
            return 0
        except BaseException:  # a closed pipe (the parent is gone), anything: never return into the parent's code
            return 1

    def take(self, fingerprint: str, image_size: int, interpolation: str, skip_bad_images: bool,
             progress: Callable[[int, int], None] | None = None,
             digests: dict[str, str] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]] | None:
        """Wait for the child and return its images, when they are the ones asked for.

        Call it once: it closes the handle.

        :param fingerprint: the fingerprint of the dataset the caller decodes.
        :param image_size: the side it wants.
        :param interpolation: the interpolation it wants.
        :param skip_bad_images: whether it leaves unreadable images out.
        :param progress: ``progress(done, total)`` while the child is still decoding.
        :param digests: filled with the SHA-256 of every file the child read, by absolute path.
        :returns: by split, ``(images, labels, n_skipped)`` as
            :func:`~automl_transfer.data.images.decode_images` gives them (a warning logged
            for every skipped image), or ``None``: decode them yourself.
        """
        wanted = (fingerprint, image_size, skip_bad_images) == (self.fingerprint, self.image_size, self.skip_bad_images)
        try:
            report = self._wait(progress) if wanted and self._reader is not None else None
            if report is None or (report["resized"] and interpolation != self.interpolation):
                return None
            import torch

            if digests is not None:
                digests.update(report["digests"])
            decoded, offset = {}, 0
            for name, items in self.splits.items():
                images = torch.from_numpy(self._pixels[offset:offset + len(items)])  # keeps the shared memory
                decoded[name] = decoded_tensors(images, items, [tuple(entry) for entry in report["skipped"][name]])
                offset += len(items)
            return decoded
        finally:
            self.close()

    def _wait(self, progress: Callable[[int, int], None] | None) -> Mapping | None:
        """Read the child's reports to the end; its result, or ``None`` when it failed or died."""
        total = len(self._pixels)
        if progress is not None:
            progress(0, total)
        for line in self._reader:
            kind, _, rest = line.rstrip(b"\n").partition(b" ")
            if kind == b"P" and progress is not None:
                progress(int(rest), total)
            elif kind == b"R":
                return json.loads(rest)
            elif kind == b"F":
                logger.info("decoding ahead failed (%s); decoding in the search", rest.decode("utf-8", "replace"))
                return None
        return None

    def close(self) -> None:
        """Stop the child (when it still runs), wait for it, and let go of the shared memory
        (the images taken keep it as long as they live). Closing twice does nothing."""
        if self.pid is not None and os.getpid() == self._parent:
            self._reader.close()
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
        self.pid = self._reader = None
        self._pixels = self._memory = None

    def __enter__(self) -> DecodingAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

