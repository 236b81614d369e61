"""Backbones from timm: any architecture timm knows, as ``timm:MODEL[.TAG][@WEIGHTS]``.

``timm:resnet50`` starts from timm's default pretrained weights for ``resnet50``;
``timm:resnet50.a1_in1k`` and ``timm:resnet50@a1_in1k`` both pick the ``a1_in1k`` weights;
``timm:resnet50@none`` starts from random weights. Giving two different tags
(``timm:resnet50.a1_in1k@a2_in1k``) is refused rather than guessed at. The model is made
with ``num_classes=0``, so it returns pooled features and has no classifier parameters.

Pretrained weights come from the Hugging Face Hub cache (``HF_HUB_OFFLINE=1`` works once
they are cached). When they are neither cached nor reachable, the builder fails after one
attempt (instead of huggingface_hub's minute of retries) with a :class:`WeightsError`
showing the ``@/path/to/weights.safetensors`` and ``@none`` alternatives.

Parameter groups come from the model's own ``group_matcher(coarse=False)``: the stem, then
one group per block, with the final norm in the last block's group. Parameters the matcher
leaves unmatched (timm files them last, as the "head": a pre-logits norm such as ConvNeXt's
``head.norm``) join the last group too, as a ViT's final norm does. Models without a
``group_matcher`` fall back to timm's ``auto_group_layers``.

The plugin also registers the weights layout ``timm``: a checkpoint whose names do not fit
is converted by the ``pretrained_filter_fn`` timm has for the model's family (torchvision's
RegNet and DenseNet names, the original ConvNeXt, ViT or Swin repositories' names ...), through
``timm.create_model(..., pretrained_cfg_overlay={"state_dict": ...})``.

timm and huggingface_hub are imported when a backbone is built, not when the plugin loads.
"""

from __future__ import annotations

import difflib
import logging
import re
from typing import TYPE_CHECKING

from automl_transfer.plugin import (
    NO_WEIGHTS,
    Backbone,
    UnknownComponentError,
    WeightsError,
    WeightsUnreachableError,
    hookimpl,
)

if TYPE_CHECKING:
    from torch import nn

#: Weight files timm looks for in a Hub repository when its config names none.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@hookimpl
def register_backbones(register):
    """Register the ``timm`` backbone builder."""
    register("timm", build_timm_backbone, description="any timm model, e.g. timm:resnet50.a1_in1k")


def build_timm_backbone(model: str, weights: str | None) -> Backbone:
    """Build timm model ``model`` as a pooled-feature backbone.

    :param model: a timm model name, with or without a pretrained tag (``resnet50.a1_in1k``).
    :param weights: ``None`` for the model's default (or named) pretrained weights,
        ``"none"`` for random weights, or a pretrained tag such as ``"a1_in1k"``.
    :returns: the backbone; ``architecture`` is the timm name with the tag of the pretrained
        config used (``resnet50.a1_in1k``), so ``timm:<architecture>@none`` rebuilds it.
    :raises UnknownComponentError: timm has no such architecture (close matches are named).
    :raises WeightsError: the tag is unknown, two different tags were given, the model has no
        pretrained weights, or they can be neither downloaded nor found in the cache.
    """
    import timm
    from timm.data import resolve_data_config

    name = _timm_name(model, weights)
    pretrained = weights != NO_WEIGHTS
    if pretrained:
        _check_weights_reachable(name, model)
    try:
        network = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except OSError as error:
        raise _unreachable(model, name, error) from error
    config = network.pretrained_cfg
    architecture = f"{config['architecture']}.{config['tag']}" if config.get("tag") else name
    return Backbone(
        module=network,
        num_features=getattr(network, "head_hidden_size", None) or network.num_features,
        data_config=resolve_data_config({}, model=network),
        param_groups=timm_param_groups(network),
        architecture=architecture,
    )


def timm_param_groups(network: nn.Module) -> list[list[str]]:
    """Group ``network``'s trainable parameters from input to output with timm's own layer map.

    :param network: a timm model built with ``num_classes=0``.
    :returns: parameter names per group, stem first; the parameters the model's
        ``group_matcher`` leaves unmatched are added to the last group.
    """
    from timm.models import group_parameters
    from timm.optim import auto_group_layers

    matcher_method = getattr(network, "group_matcher", None)
    unmatched: set[str] = set()
    if matcher_method is None:
        group_of = auto_group_layers(network)
    else:
        matcher = matcher_method(coarse=False)
        group_of = group_parameters(network, matcher, reverse=True)
        if isinstance(matcher, dict):
            unmatched = _unmatched_names(network, matcher)
    by_group: dict[int, list[str]] = {}
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            by_group.setdefault(group_of[name], []).append(name)
    groups = [by_group[index] for index in sorted(by_group)]
    if len(groups) > 1 and unmatched and set(groups[-1]) <= unmatched:
        groups[-2].extend(groups.pop())
    return groups


def _unmatched_names(network: nn.Module, matcher: dict) -> set[str]:
    """Names no pattern of a dict ``group_matcher`` matches; timm puts them in a last group."""
    patterns = []
    for spec in matcher.values():
        if isinstance(spec, (list, tuple)):
            patterns.extend(re.compile(entry[0]) for entry in spec)
        elif spec is not None:
            patterns.append(re.compile(spec))
    return {name for name, _ in network.named_parameters() if not any(pattern.match(name) for pattern in patterns)}


def _timm_name(model: str, weights: str | None) -> str:
    """The name to give ``timm.create_model``: the architecture plus the tag asked for."""
    import timm
    from timm.models import get_arch_pretrained_cfgs, split_model_name_tag

    architecture, model_tag = split_model_name_tag(model)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(f'timm:{match}' for match in close)}?" if close else ""
        raise UnknownComponentError(
            f"timm has no model {model!r}{hint} (python -c \"import timm; print(timm.list_models('*resnet*'))\" "
            "lists models by pattern)"
        )
    tag = model_tag
    if weights not in (None, NO_WEIGHTS):
        if model_tag and model_tag != weights:
            raise WeightsError(
                f"timm:{model}@{weights} names two pretrained tags ({model_tag} and {weights}); give one: "
                f"timm:{architecture}.{weights} or timm:{architecture}@{weights}"
            )
        tag = weights
    if not tag:
        return architecture
    name = f"{architecture}.{tag}"
    known = get_arch_pretrained_cfgs(architecture)
    if name not in known:
        tags = ", ".join(split_model_name_tag(known_name)[1] for known_name in known) or "none"
        raise WeightsError(f"timm has no pretrained tag {tag!r} for {architecture}; its tags: {tags}")
    return name


def _check_weights_reachable(name: str, model: str) -> None:
    """Make sure pretrained weights for ``name`` are cached or downloadable, trying the Hub once.

    huggingface_hub retries an unreachable Hub for about 20 seconds per file and timm asks for
    two files, so an offline machine would wait most of a minute for a download that cannot
    happen. One metadata request without retries tells the same thing at once.

    :raises WeightsError: timm has no pretrained weights for ``name``, or the Hub cannot be
        reached and the weights are not in its cache.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name)
    if config is None or not (config.hf_hub_id or config.url or config.file):
        raise WeightsError(
            f"timm has no pretrained weights for {name}; train it from random weights with "
            f"timm:{model}@none or give a file with timm:{model}@/path/to/weights.safetensors"
        )
    if not config.hf_hub_id:
        return  # a plain URL: torch.hub checks its cache and tries the download once
    repo_id, _, revision = config.hf_hub_id.partition("@")
    files = (config.hf_hub_filename,) if config.hf_hub_filename else HUB_WEIGHT_FILES
    if any(isinstance(try_to_load_from_cache(repo_id, file, revision=revision or None), str) for file in files):
        return
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, files[0], revision=revision or None))
    except RemoteEntryNotFoundError:
        return  # the Hub answered: timm will find the file under its other name
    except Exception as error:  # offline mode, DNS, connection, timeout or HTTP error: all mean "cannot download"
        raise _unreachable(model, f"{name} from the Hugging Face Hub repository {repo_id}", error) from error


def _unreachable(model: str, what: str, error: BaseException) -> WeightsUnreachableError:
    from huggingface_hub import constants as hub_constants

    reason = " ".join(str(error).split()) or type(error).__name__
    cache = hub_constants.HF_HUB_CACHE
    return WeightsUnreachableError(
        f"pretrained weights {what} could not be downloaded and are not in the cache ({cache}): {reason}. "
        f"Download them once while online, or start from a local file with timm:{model}@/path/to/weights.safetensors, "
        f"or from random weights with timm:{model}@none",
        reason=reason,
    )


@hookimpl
def register_weight_layouts(register):
    """Register the ``timm`` weights layout: the checkpoint filter of the model's family."""
    register(
        "timm",
        convert_with_timm_filter,
        description="timm's checkpoint filter for the model's family (torchvision DenseNet, RegNet; original ConvNeXt, ViT ...)",
    )


def convert_with_timm_filter(architecture: str, state_dict: dict, model: nn.Module) -> dict | None:
    """Rename a checkpoint with the ``pretrained_filter_fn`` timm has for ``model``'s family.

    The model is rebuilt by ``timm.create_model`` with the checkpoint as its pretrained weights
    (``pretrained_cfg_overlay={"state_dict": ...}``), so timm's own filter converts it (its
    torchvision converters for DenseNet and RegNet, the original-repository layouts of ConvNeXt,
    ViT, Swin ...). timm loads without a classifier non-strictly, so which tensors came from the
    file is checked here: the model is rebuilt twice from the same seed, once from the file and
    once from the file with every value moved by one; a tensor the two builds agree on was not
    filled from the file, and the checkpoint is declined.

    :param architecture: the backbone's architecture name (the model's own timm config decides).
    :param state_dict: the file's tensors by name.
    :param model: the backbone; only a timm model (one with a ``pretrained_cfg``) is converted.
    :returns: the tensors under ``model``'s names, or ``None`` when ``model`` is not a timm model
        or timm's filter does not fill every tensor of it from this checkpoint.
    """
    import torch

    del architecture
    config = getattr(model, "pretrained_cfg", None)
    if not isinstance(config, dict) or not config.get("architecture"):
        return None
    converted = _rebuilt_from(config["architecture"], state_dict)
    if converted is None:
        return None  # timm's filter refused the file: no control build needed
    moved = {name: tensor + 1 if tensor.is_floating_point() else tensor for name, tensor in state_dict.items()}
    control = _rebuilt_from(config["architecture"], moved)
    if control is None:
        return None
    unfilled = [
        name
        for name, tensor in converted.items()
        if tensor.is_floating_point() and torch.equal(tensor, control[name])
    ]
    return None if unfilled else converted


def _rebuilt_from(architecture: str, state_dict: dict) -> dict | None:
    """The state dict of timm ``architecture`` built (from a fixed seed) with ``state_dict`` as its weights."""
    import timm
    import torch

    timm_logger = logging.getLogger("timm")
    level = timm_logger.level
    # timm warns about the names it leaves unused: trying a layout that does not fit is no news to a user.
    timm_logger.setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            rebuilt = timm.create_model(
                architecture, pretrained=True, num_classes=0, pretrained_cfg_overlay={"state_dict": dict(state_dict)}
            )
    except Exception:  # any filter's or loader's complaint means "not this layout"
        return None
    finally:
        timm_logger.setLevel(level)
    return rebuilt.state_dict()
