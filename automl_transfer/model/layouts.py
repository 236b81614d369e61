"""Fitting a weights file's tensors to a backbone: as saved, unwrapped, or through a weights layout.

Checkpoints come in many layouts for one architecture: timm's own names, a DDP or Lightning
wrapper's prefix (``module.``, ``model.``), a ``backbone.`` sub-module, torchvision's names,
the EfficientNet-PyTorch names. :func:`fit_weights` tries, in this order, until one fills
the backbone:

1. the names as saved, then with each wrapper prefix of :data:`WRAPPER_PREFIXES` removed
   (repeatedly, for ``module.model.``);
2. every registered weights layout (hook ``register_weight_layouts``; built-ins are
   registered like a third party's), on each of those views.

A candidate fits only when it holds every parameter and buffer of the backbone with the
backbone's shape (BatchNorm's ``num_batches_tracked`` counters may be absent); names the
backbone lacks, such as an old classifier, are dropped. Nothing is matched by position, so a
layout that renames wrongly fails this check instead of loading the wrong tensors. When no
candidate fits, one :class:`~automl_transfer.errors.WeightsError` line says what was tried
and which names differ in the closest candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from automl_transfer.errors import WeightsError
from automl_transfer.registry import components

#: Prefixes that wrappers put before every name: DDP and DataParallel (``module.``),
#: Lightning modules and wrappers (``model.``), detection or segmentation models
#: (``backbone.``), ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")

#: BatchNorm's step counters: bookkeeping, not weights; files saved by older tools omit them.
COUNTER_SUFFIX = "num_batches_tracked"

#: How many key names an error message lists before summarising the rest.
LISTED_KEYS = 8


@dataclass
class FittedWeights:
    """A weights file's tensors, renamed to fit a backbone.

    :param state: the backbone's names mapped to the file's tensors.
    :param layout: how they were matched: ``"as saved"``, ``"without prefix 'module.'"``,
        ``"layout efficientnet-pytorch"``, ...
    :param dropped: the sorted names of the file's tensors the backbone has no use for (an old classifier).
    """

    state: dict[str, torch.Tensor]
    layout: str
    dropped: list[str]


@dataclass
class _Attempt:
    """One way of reading the file that was tried, and how far it was from fitting."""

    how: str
    missing: list[str]
    mismatched: list[str]
    unused: list[str]

    @property
    def distance(self) -> int:
        return len(self.missing) + len(self.mismatched)


def fit_weights(state: dict[str, torch.Tensor], module: nn.Module, architecture: str, origin: str) -> FittedWeights:
    """Rename ``state`` to fit ``module``, as saved, without a wrapper prefix, or through a layout.

    :param state: the file's tensors by name (as :func:`~automl_transfer.model.weights.load_weights_file` returns them).
    :param module: the backbone, built with random weights.
    :param architecture: the backbone's architecture name, handed to the layouts.
    :param origin: where the weights came from (``weights file X``), for messages.
    :returns: the fitted tensors and how they were matched.
    :raises WeightsError: no reading fills the backbone (one line naming what was tried and the
        closest reading's missing or misshapen names), or a layout returned something other
        than a dict of tensors.
    """
    expected = module.state_dict()
    attempts: list[_Attempt] = []
    views = list(_views(state))
    for how, view in views:
        fitted = _try(how, view, expected, attempts)
        if fitted is not None:
            return fitted
    tried_layouts = []
    for layout in components("layout"):
        for how, view in views:
            converted = _convert(layout, architecture, view, module, origin)
            if converted is None:
                continue
            where = "" if how == "as saved" else f" {how}"
            fitted = _try(f"layout {layout.name}{where}", converted, expected, attempts)
            if fitted is not None:
                return fitted
        tried_layouts.append(layout.name)
    raise WeightsError(_no_fit_message(origin, architecture, attempts, tried_layouts))


def _views(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield the file's names as saved, then with each wrapper prefix (and nested ones) removed."""
    yield "as saved", state
    pending = [((), state)]
    while pending:
        removed, view = pending.pop(0)
        for prefix in WRAPPER_PREFIXES:
            inner = {name[len(prefix) :]: tensor for name, tensor in view.items() if name.startswith(prefix)}
            if inner and len(removed) < 3:
                chain = (*removed, prefix)
                yield "without prefix " + repr("".join(chain)), inner
                pending.append((chain, inner))


def _try(
    how: str, candidate: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], attempts: list[_Attempt]
) -> FittedWeights | None:
    """Return ``candidate`` fitted when it fills ``expected``; else record how far off it was."""
    missing = [name for name in expected if name not in candidate and not name.endswith(COUNTER_SUFFIX)]
    mismatched = [
        f"{name} {tuple(candidate[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in candidate and candidate[name].shape != tensor.shape
    ]
    if missing or mismatched:
        unused = [name for name in candidate if name not in expected]
        attempts.append(_Attempt(how, missing, mismatched, unused))
        return None
    fitted = {name: tensor for name, tensor in candidate.items() if name in expected}
    return FittedWeights(fitted, how, sorted(name for name in candidate if name not in expected))


def _convert(layout, architecture: str, view: dict[str, torch.Tensor], module: nn.Module, origin: str):
    """Call one layout's converter on a copy of ``view``; ``None`` when it declines."""
    converted = layout.build(architecture, dict(view), module)
    if converted is None:
        return None
    if not isinstance(converted, dict) or not all(isinstance(tensor, torch.Tensor) for tensor in converted.values()):
        raise WeightsError(
            f"weights layout {layout.name!r} of plugin {layout.plugin!r} returned {type(converted).__name__} for "
            f"{origin}, not a dict of tensors; report this to the plugin's author or disable it with --disable-plugins"
        )
    return converted


def _no_fit_message(origin: str, architecture: str, attempts: list[_Attempt], layouts: list[str]) -> str:
    """One line: what was tried, and the names that differ in the closest reading."""
    readings = [attempt.how for attempt in attempts if not attempt.how.startswith("layout ")]
    tried = ", ".join(readings)
    if layouts:
        tried += f"; weights layouts {', '.join(layouts)}"
    closest = min(attempts, key=lambda attempt: attempt.distance)
    if closest.missing:
        problem = f"lacks {len(closest.missing)} of the backbone's weights: {list_keys(closest.missing)}"
        if closest.unused:
            problem += f"; the file's unused names begin {list_keys(closest.unused)}"
    else:
        problem = f"does not fit the architecture, shapes in the file vs the model: {list_keys(closest.mismatched)}"
    return (
        f"{origin} fits no layout of {architecture} (tried {tried}); read {closest.how} it {problem}; "
        "it was probably saved from another architecture: give the model it was trained as, "
        "or add a weights layout plugin (hook register_weight_layouts)"
    )


def list_keys(keys: list[str]) -> str:
    """Return the first :data:`LISTED_KEYS` of ``keys``, comma-separated, with a count of the rest."""
    listed = ", ".join(keys[:LISTED_KEYS])
    if len(keys) > LISTED_KEYS:
        listed += f" and {len(keys) - LISTED_KEYS} more"
    return listed
