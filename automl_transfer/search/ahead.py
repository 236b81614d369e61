"""Starting a new search's image decoding before torch is loaded (``automl-transfer search``).

The command calls :func:`decode_ahead` first thing: the dataset is listed and its images are
decoded by a child process (:class:`~automl_transfer.data.ahead.DecodingAhead`) on another
core while this one imports torch, timm and optuna and checks every source; the search then
takes them (:meth:`TransferSearch.prepare <automl_transfer.search.search.TransferSearch.prepare>`).
"""

from __future__ import annotations

from automl_transfer.data.ahead import DecodingAhead, can_decode_ahead
from automl_transfer.data.datasets import dataset_fingerprint, read_dataset
from automl_transfer.errors import AutoMLTransferError
from automl_transfer.search.config import SearchConfig
from automl_transfer.space import load_space
from automl_transfer.storage.run_dir import JOURNAL_NAME


def decode_ahead(config: SearchConfig) -> DecodingAhead | None:
    """Start decoding the images of the new search ``config`` describes, in a child process.

    :returns: the handle to give :class:`~automl_transfer.search.search.TransferSearch`, or
        ``None`` when there is nothing to gain: :func:`can_decode_ahead` says no; the run dir
        holds a study already or the study lives in ``--storage`` (a resume, or a worker's
        search, whose images are usually in the run dir's cache); the space leaves the image
        size to each source; or the space or the dataset cannot be read (the search reports
        that, in its own order, when it checks its inputs).
    """
    if not can_decode_ahead() or config.storage is not None or (config.run_dir / JOURNAL_NAME).exists():
        return None
    try:
        image_size = load_space(config.space).to_dict()["image_size"]
        if not isinstance(image_size, int):
            return None
        dataset = read_dataset(config.dataset)
        fingerprint = dataset_fingerprint(dataset)
    except (AutoMLTransferError, OSError):
        return None
    return DecodingAhead.start(dataset, fingerprint, image_size, skip_bad_images=config.skip_bad_images)
