"""Source models: the backbone a source text ``PLUGIN:MODEL[@WEIGHTS]`` names, built.

The text is parsed by :class:`~automl_transfer.model.source_spec.SourceSpec`. ``PLUGIN`` names a registered backbone builder (``timm``, ``torchvision`` or a third-party
plugin's), ``MODEL`` the architecture it knows, and ``WEIGHTS`` which weights to start from:

* nothing: the builder's default pretrained weights (``timm:resnet50``);
* a pretrained tag the builder resolves (``timm:resnet50@a1_in1k``,
  ``torchvision:resnet50@IMAGENET1K_V2``);
* ``none``: random initialisation (``timm:resnet18@none``);
* a local file (``timm:resnet50@./weights.safetensors``): any value ending in
  ``.safetensors``, ``.pt`` or ``.pth``, or containing a path separator, relative to the
  working directory. The core loads it (see :mod:`automl_transfer.model.weights`), never the plugin.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

from automl_transfer.contract.components import NO_WEIGHTS, Backbone, Component
from automl_transfer.errors import PluginError, WeightsError
from automl_transfer.model.source_spec import SourceSpec
from automl_transfer.model.weights import apply_backbone_weights, load_weights_file
from automl_transfer.registry import get_component


def build_backbone(source: str | SourceSpec) -> Backbone:
    """Build the backbone a source names, with its weights loaded.

    Tags, ``none`` and the default weights are the plugin's business: its builder receives
    them. A local file is read first (so a bad file fails before any model is built), then
    the builder makes the model with ``"none"`` and the core copies the file's tensors in.

    :param source: the source text or an already parsed :class:`SourceSpec`.
    :returns: the backbone, ready to train.
    :raises UnknownComponentError: a malformed source, an unknown plugin (with close
        matches) or a model the plugin does not know.
    :raises WeightsError: weights that cannot be reached, read safely, or fitted.
    :raises PluginError: the builder returned something other than a ``Backbone``.
    """
    spec = source if isinstance(source, SourceSpec) else SourceSpec.parse(source)
    return _build(spec, get_component("backbone", spec.plugin))


class BackboneCache:
    """Backbones with fixed weights built once, handed out as copies: one search's sources.

    A search checks every source before its first trial and then builds one for every trial;
    with this cache each pretrained or file-weighted source is built (and its weights read)
    once, and every trial gets its own copy. Random weights (``@none``) are drawn anew at
    every call, from the caller's seed. A rewritten weights file is read again.

    :param size: how many built backbones to keep, the most recently used.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._kept: OrderedDict[tuple, Backbone] = OrderedDict()

    def build(self, source: str | SourceSpec) -> Backbone:
        """Return a backbone for ``source``, as :func:`build_backbone` does (the caller's own copy).

        :raises AutoMLTransferError: as :func:`build_backbone`.
        """
        spec = source if isinstance(source, SourceSpec) else SourceSpec.parse(source)
        if spec.weights == NO_WEIGHTS:
            return build_backbone(spec)
        weights_file = spec.weights_file
        stamp = None
        if weights_file is not None and weights_file.is_file():
            stamp = (weights_file.stat().st_size, weights_file.stat().st_mtime_ns)
        key = (str(spec), stamp)
        if key not in self._kept:
            self._kept[key] = build_backbone(spec)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return copy.deepcopy(self._kept[key])


def _build(spec: SourceSpec, component: Component) -> Backbone:
    """Have the plugin build ``spec``'s backbone and load a local weights file into it.

    The file is the source's ``@FILE``, read before the build so that a bad file fails before
    any model is made, or the ``weights_file`` a builder set on its backbone (weights shipped
    in a package).
    """
    weights_file = spec.weights_file
    state = None
    if weights_file is None:
        backbone = component.build(spec.model, spec.weights)
    else:
        if not weights_file.exists():
            raise WeightsError(
                f"weights file {weights_file} of source {spec} not found; give an existing file with "
                f"{spec.plugin}:{spec.model}@/path/to/weights.safetensors, or start from random weights with "
                f"{spec.plugin}:{spec.model}@{NO_WEIGHTS}"
            )
        state = load_weights_file(weights_file)
        backbone = component.build(spec.model, NO_WEIGHTS)
    if not isinstance(backbone, Backbone):
        raise PluginError(
            f"plugin {component.plugin!r} built {type(backbone).__name__} for {spec}, not a Backbone; "
            "report this to the plugin's author or disable it with --disable-plugins"
        )
    if state is None and backbone.weights_file is not None:
        weights_file = Path(backbone.weights_file)
        state = load_weights_file(weights_file)
    if state is not None:
        apply_backbone_weights(backbone.module, state, f"weights file {weights_file}", backbone.architecture)
        backbone.weights_file = None
    return backbone
