"""A search's sources: the offline alternatives applied to them, then every one checked.

``--weights none`` starts every source of the space from random weights (a preset's
architectures without a download); ``--weights-dir DIR`` starts each source whose weights
are a pretrained tag or the default from ``DIR/MODEL.safetensors`` when that file exists
(``MODEL.TAG.safetensors`` first for ``PLUGIN:MODEL@TAG``). :func:`apply_weights_choice`
rewrites the space's sources once, so the study records (and workers use) the sources
really trained from.

:func:`check_sources` builds every source before any training; pretrained weights that can be
neither downloaded nor found in the cache are gathered, so one error names every such source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.errors import AutoMLTransferError, WeightsUnreachableError
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.sources import BackboneCache
from automl_transfer.space import SearchSpace

#: The ``--weights`` values: the weights the space names, or random weights for every source.
WEIGHTS_CHOICES = ("pretrained", NO_WEIGHTS)


def weights_file_in(folder: Path, spec: SourceSpec) -> Path | None:
    """Return the file of ``folder`` holding ``spec``'s weights, or ``None`` when there is none.

    :returns: ``MODEL.TAG.safetensors`` for ``PLUGIN:MODEL@TAG`` when it exists, else
        ``MODEL.safetensors`` when it exists, as an absolute path.
    """
    names = ([f"{spec.model}.{spec.weights}.safetensors"] if spec.weights else []) + [f"{spec.model}.safetensors"]
    for name in names:
        if (folder / name).is_file():
            return (folder / name).absolute()
    return None


def offline_source(source: str, weights: str | None, weights_dir: Path | None) -> str:
    """Rewrite one source for ``--weights`` / ``--weights-dir``; sources with a weights file stay.

    :returns: ``PLUGIN:MODEL@none`` for ``weights="none"``; ``PLUGIN:MODEL@/DIR/FILE`` when
        ``weights_dir`` holds the source's file; otherwise ``source`` unchanged.
    """
    spec = SourceSpec.parse(source)
    if weights == NO_WEIGHTS:
        return str(SourceSpec(spec.plugin, spec.model, NO_WEIGHTS))
    if weights_dir is None or spec.weights == NO_WEIGHTS or spec.weights_file is not None:
        return source
    found = weights_file_in(weights_dir, spec)
    return source if found is None else str(SourceSpec(spec.plugin, spec.model, str(found)))


def apply_weights_choice(space: SearchSpace, weights: str | None, weights_dir: Path | None) -> SearchSpace:
    """Return ``space`` with its sources rewritten by :func:`offline_source` (``space`` itself when nothing changes).

    :raises AutoMLTransferError: both options given, or a ``weights_dir`` that is not a folder.
    """
    if weights not in (None, *WEIGHTS_CHOICES):
        raise AutoMLTransferError(f"--weights must be one of {', '.join(WEIGHTS_CHOICES)}, not {weights!r}")
    weights = None if weights == "pretrained" else weights
    if weights is not None and weights_dir is not None:
        raise AutoMLTransferError("give --weights none or --weights-dir DIR, not both")
    if weights_dir is not None and not Path(weights_dir).expanduser().is_dir():
        raise AutoMLTransferError(f"--weights-dir {weights_dir} is not a folder; give the folder holding MODEL.safetensors files")
    folder = None if weights_dir is None else Path(weights_dir).expanduser()
    sources = list(dict.fromkeys(offline_source(source, weights, folder) for source in space.sources))
    if sources == space.sources:
        return space
    return SearchSpace.from_dict({**space.written(), "source": sources}, origin=space.origin)


def check_sources(sources: list[str], backbones: BackboneCache) -> dict[str, dict[str, Any]]:
    """Build every source once, so a bad name or unreachable weights fail before any training.

    :param backbones: keeps what is built for the trials.
    :returns: each source's data config (input size, mean, std, interpolation).
    :raises WeightsUnreachableError: naming every source whose pretrained weights can be
        neither downloaded nor found in the cache, and the ways to run without them.
    :raises AutoMLTransferError: the first source that cannot be parsed, found or loaded otherwise.
    """
    configs, unreachable = {}, []
    for source in dict.fromkeys(sources):
        try:
            configs[source] = backbones.build(source).data_config
        except WeightsUnreachableError as error:
            unreachable.append((source, error))
    if unreachable:
        raise _all_unreachable(unreachable)
    return configs


def _all_unreachable(unreachable: list[tuple[str, WeightsUnreachableError]]) -> WeightsUnreachableError:
    """One error naming every unreachable source, the first reason, and how to run without a download."""
    if len(unreachable) == 1:
        (source, error), = unreachable
        return WeightsUnreachableError(
            f"{error}; for every source of a space at once: --weights none, or --weights-dir DIR with "
            f"{SourceSpec.parse(source).model}.safetensors in DIR",
            reason=error.reason,
        )
    names = ", ".join(source for source, _ in unreachable)
    files = ", ".join(f"{SourceSpec.parse(source).model}.safetensors" for source, _ in unreachable)
    reason = unreachable[0][1].reason
    return WeightsUnreachableError(
        f"the pretrained weights of {len(unreachable)} sources can be neither downloaded nor found in the cache: "
        f"{names} (first reason: {reason}). Download them once while online, or run without them: "
        f"--weights none (random weights), or --weights-dir DIR with {files} in DIR",
        reason=reason,
    )

