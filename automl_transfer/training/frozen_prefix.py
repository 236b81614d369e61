"""Computing what frozen layers compute once, instead of every epoch.

Frozen layers in eval mode map an image to the same tensor every epoch, so when a trial does
not augment its images, the trainer can compute their output once per fit and train the rest
of the network on it. :func:`split_frozen_prefix` finds that frozen front of a
:class:`~automl_transfer.model.network.TransferModel`:

- at freeze depth 1 it is the whole backbone (with the normalisation): its output is the
  pooled features, and the rest is the head alone: a feature-extraction trial trains a linear
  model (or an MLP) on cached features;
- otherwise the model is traced with ``torch.fx`` and every node that depends only on the
  input and on frozen, deterministic layers belongs to the front; the tensor the front hands
  to the rest (the "frontier") is cached, and the rest runs as a ``GraphModule`` that shares
  the model's layers (so training it trains the model).

The split is refused, with a reason the trial records, when the model cannot be traced, when
the frozen part is stochastic in training (an active dropout), or when it hands the rest
more than one tensor. With augmentation the images differ every epoch, so nothing can be
reused: the trainer then runs the whole network as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from automl_transfer.data.batches import DeviceSplit, fits_in_memory, to_model_input
from automl_transfer.model.network import TransferModel
from automl_transfer.training.evaluation import autocast

#: Modules whose training mode changes what they compute: ``torch.fx`` keeps them whole, so
#: that they follow the mode they are in when the rest of the network runs.
_MODE_DEPENDENT = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
#: Functions whose result is random: a graph holding one is not split.
_RANDOM_FUNCTIONS = {
    torch.rand, torch.randn, torch.rand_like, torch.randn_like, torch.bernoulli,
    nn.functional.dropout, nn.functional.dropout1d, nn.functional.dropout2d, nn.functional.dropout3d,
}


@dataclass
class FrozenPrefix:
    """The frozen front of a model and the rest of it.

    :param front: maps images in ``[0, 1]`` ``(B, 3, S, S)`` to the frontier tensor; run it
        under ``torch.no_grad()`` with the model in its training modes.
    :param rest: maps frontier tensors to logits, sharing the model's trainable layers.
    :param whole_backbone: whether the front is the whole backbone (its output the pooled features).
    """

    front: nn.Module
    rest: nn.Module
    whole_backbone: bool


def split_frozen_prefix(model: TransferModel) -> tuple[FrozenPrefix | None, str]:
    """Split ``model`` into its frozen, deterministic front and the rest.

    Call it with the model in the modes it trains in (``model.train()`` then the frozen
    layers put back in eval mode), since a layer's mode decides whether it is deterministic.

    :param model: a model whose frozen parameters have ``requires_grad`` False.
    :returns: ``(prefix, "")``, or ``(None, reason)`` when nothing can be reused.
    """
    if not any(parameter.requires_grad for parameter in model.backbone.parameters()):
        return FrozenPrefix(front=FeatureExtractor(model.backbone, model.mean, model.std), rest=model.head, whole_backbone=True), ""
    if all(parameter.requires_grad for parameter in model.backbone.parameters()):
        return None, "nothing is frozen"
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # torch.fx cannot follow data-dependent Python control flow
        return None, f"the model cannot be traced ({type(error).__name__})"
    if any(node.op == "call_function" and node.target in _RANDOM_FUNCTIONS for node in graph.nodes):
        return None, "the network draws random numbers outside its layers"
    frozen = _frozen_nodes(model, graph)
    frontier = _frontier(graph, frozen)
    while len(frontier) > 1:
        # A cheap, parameterless step fed by the frontier alone (a pooling beside a block's
        # output, say) is recomputed in the rest instead of cached.
        movable = [node for node in frontier if _parameterless(model, node) and _fed_by(node, frontier, frozen)]
        if not movable:
            break
        frozen.discard(movable[0])
        frontier = _frontier(graph, frozen)
    if len(frontier) != 1:
        return None, "the frozen layers hand the rest of the network more than one tensor"
    if frontier[0].op == "placeholder":
        return None, "the first layer trains"
    rest = torch.fx.GraphModule(model, _rest_graph(graph, frozen, frontier[0]))
    rest.graph.eliminate_dead_code()  # the parameters only the front uses
    rest.recompile()
    return FrozenPrefix(
        front=torch.fx.GraphModule(model, _front_graph(graph, frontier[0])), rest=rest, whole_backbone=False
    ), ""


@torch.no_grad()
def front_outputs(front: nn.Module, split: DeviceSplit, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """Run ``front`` over every image of ``split``, in order, and keep the outputs on ``device``.

    :param front: the frozen front (:attr:`FrozenPrefix.front`), in its training modes.
    :param split: the uint8 images.
    :param batch_size: images per forward pass.
    :returns: the outputs ``(N, ...)``, or ``None`` when they would not fit in memory
        (:func:`~automl_transfer.data.batches.fits_in_memory`).
    """
    cuda = device.type == "cuda"
    outputs = None
    for start in range(0, len(split), batch_size):
        images, _ = split.take(slice(start, start + batch_size))
        with autocast(device):
            batch = front(to_model_input(images, channels_last=cuda))
        if outputs is None:
            if not fits_in_memory(batch[0].numel() * batch.element_size() * len(split), device):
                return None
            outputs = torch.empty((len(split), *batch.shape[1:]), dtype=batch.dtype, device=device)
        outputs[start : start + len(batch)] = batch
    return outputs


class FeatureExtractor(nn.Module):
    """A backbone with its normalisation: images in ``[0, 1]`` to pooled features.

    :param backbone: maps normalised images to features (shared, not copied).
    :param mean: the per-channel mean, ``(1, 3, 1, 1)`` or 3 values.
    :param std: the per-channel standard deviation, likewise.
    """

    def __init__(self, backbone: nn.Module, mean: torch.Tensor | tuple, std: torch.Tensor | tuple):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the pooled features ``(B, F)`` of images ``(B, 3, S, S)`` in ``[0, 1]``."""
        return self.backbone((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))


class _Tracer(torch.fx.Tracer):
    """Keeps layers without children and mode-dependent layers whole."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _MODE_DEPENDENT) or next(module.children(), None) is None


def _frozen_nodes(model: TransferModel, graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The nodes computed from the input and frozen, deterministic layers only."""
    frozen: set[torch.fx.Node] = set()
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if node.op == "placeholder":
            frozen.add(node)
        elif node.op == "get_attr":
            if not _attribute_trains(model, node.target):
                frozen.add(node)
        elif node.op in ("call_function", "call_method"):
            if all(item in frozen for item in inputs):
                frozen.add(node)
        elif node.op == "call_module":
            module = model.get_submodule(node.target)
            if all(item in frozen for item in inputs) and _frozen_and_deterministic(module):
                frozen.add(node)
    return frozen


def _frontier(graph: torch.fx.Graph, frozen: set[torch.fx.Node]) -> list[torch.fx.Node]:
    """The frozen nodes (parameters aside) whose value the rest of the network uses."""
    return [
        node
        for node in graph.nodes
        if node in frozen and node.op != "get_attr" and any(user not in frozen for user in node.users)
    ]


def _parameterless(model: nn.Module, node: torch.fx.Node) -> bool:
    """Whether ``node`` computes without weights of its own (a function, a method, a layer without parameters)."""
    if node.op in ("call_function", "call_method"):
        return True
    return node.op == "call_module" and next(model.get_submodule(node.target).parameters(), None) is None


def _fed_by(node: torch.fx.Node, frontier: list[torch.fx.Node], frozen: set[torch.fx.Node]) -> bool:
    """Whether every frozen input of ``node`` (parameters aside) is on the frontier."""
    return all(item in frontier for item in node.all_input_nodes if item in frozen and item.op != "get_attr")


def _attribute_trains(model: nn.Module, target: str) -> bool:
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return isinstance(value, nn.Parameter) and value.requires_grad


def _frozen_and_deterministic(module: nn.Module) -> bool:
    """Whether ``module`` has no trainable parameter and computes the same thing every time."""
    if any(parameter.requires_grad for parameter in module.parameters()):
        return False
    if not module.training:
        return True
    stochastic = "drop" in type(module).__name__.lower() or "noise" in type(module).__name__.lower()
    return not stochastic and not isinstance(module, _MODE_DEPENDENT)


def _front_graph(graph: torch.fx.Graph, frontier: torch.fx.Node) -> torch.fx.Graph:
    """A copy of ``graph`` that stops at ``frontier`` and returns it."""
    front = torch.fx.Graph()
    copies: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op == "output":
            break
        copies[node] = front.node_copy(node, lambda item: copies[item])
        if node is frontier:
            break
    front.output(copies[frontier])
    return front


def _rest_graph(graph: torch.fx.Graph, frozen: set[torch.fx.Node], frontier: torch.fx.Node) -> torch.fx.Graph:
    """A copy of ``graph`` whose input is ``frontier`` and that leaves out every other frozen node."""
    rest = torch.fx.Graph()
    copies = {frontier: rest.placeholder("frontier")}
    for node in graph.nodes:
        if node in frozen and node is not frontier and node.op != "get_attr":
            continue
        if node is frontier:
            continue
        copies[node] = rest.node_copy(node, lambda item: copies[item])
    return rest
