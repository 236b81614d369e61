"""A validated search space: it samples one trial's parameters and records its identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import optuna

from automl_transfer.model.source_spec import random_weights
from automl_transfer.space.nodes import Choice, Fixed
from automl_transfer.space.parser import Parser

#: The keys whose nodes map Optuna parameters of the same name (head and extra are nested).
_PLAIN_SKIPPED = ("head", "extra", "start")


class SearchSpace:
    """A validated search space: samples concrete trial parameters and records its identity.

    Build one with :func:`~automl_transfer.space.load_space` or :meth:`SearchSpace.from_dict`;
    the format is the README's "Search-space format".

    :ivar origin: where the space came from (``preset 'small'``, a file path), for messages.
    """

    def __init__(self, nodes: dict[str, Any], origin: str, written: Iterable[str] | None = None):
        """:param written: the keys the space names itself (default: all); the rest took their defaults."""
        self._nodes = nodes
        self.origin = origin
        self._written = frozenset(nodes if written is None else written)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], origin: str = "search space", base_dir: Path | None = None
    ) -> SearchSpace:
        """Validate a parsed search-space mapping.

        :param data: the mapping, as read from YAML or as returned by :meth:`to_dict`.
        :param origin: names the space in error messages.
        :param base_dir: the folder relative weights paths are read from (default: the working directory).
        :returns: the search space.
        :raises SearchSpaceError: a key, value or range is invalid; the message names the key.
        :raises PluginError: a head's plugin registered an invalid parameter space.
        """
        base = Path.cwd() if base_dir is None else Path(base_dir).absolute()
        return cls(Parser(origin, base).space(data), origin, written=list(data))

    @property
    def sources(self) -> list[str]:
        """The sources this space can choose from, as ``PLUGIN:MODEL[@WEIGHTS]`` texts."""
        node = self._nodes["source"]
        return list(node.choices) if isinstance(node, Choice) else [node.value]

    @property
    def start_points(self) -> tuple[dict[str, Any], ...]:
        """The recipes tried first (see :mod:`automl_transfer.space.start_points`)."""
        return self._nodes["start"]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one trial's concrete parameters.

        Only ``trial.suggest_*`` is called, so any sampler and ``optuna.trial.FixedTrial`` work.
        Fixed values are returned without being suggested. A source with random weights
        (``@none``) trains every layer: its ``freeze_depth`` is 0 and not sampled. A trial that
        freezes the whole backbone (``freeze_depth`` 1) is feature extraction: it does not
        augment (``augment`` is ``none`` and not sampled), so the backbone's features are
        computed once and cached.

        :param trial: an Optuna trial.
        :returns: a JSON-ready dict with every key of the format but ``start``: ``head`` is the
            chosen head's name, ``head_params`` its parameters, ``extra`` the plugin settings,
            ``image_size`` ``None`` for the source's own size.
        """
        params: dict[str, Any] = {}
        for key, node in self._nodes.items():
            if key == "head":
                names = list(node)
                head = names[0] if len(names) == 1 else trial.suggest_categorical("head", names)
                params["head"] = head
                params["head_params"] = {
                    param: sub.suggest(trial, f"head.{head}.{param}") for param, sub in node[head].items()
                }
            elif key == "extra":
                params["extra"] = {name: sub.suggest(trial, f"extra.{name}") for name, sub in node.items()}
            elif key == "freeze_depth" and random_weights(params["source"]):
                params[key] = 0.0
            elif key == "augment" and params["freeze_depth"] >= 1.0:
                params[key] = "none"  # feature extraction: the backbone's features are computed once
            elif key != "start":
                params[key] = node.suggest(trial, key)
        return params

    def start_trials(self, sources: list[str] | None = None) -> list[dict[str, Any]]:
        """Return the Optuna parameters of the start points' trials, in the order to run them.

        Recipe after recipe, and within a recipe source after source in ``sources``' order
        (default: the space's). Every searched parameter gets a value: the recipe's, moved
        to the nearest value the space allows, or the middle of its range (its first choice).
        A recipe pinned to a source (``source: ...``) runs for that source only; one that
        freezes layers does not run for a source with random weights; duplicates are dropped.

        :param sources: the space's sources in the order their start trials should run.
        :returns: one ``{parameter name: value}`` per start trial, ready for ``enqueue_trial``.
        """
        trials: list[dict[str, Any]] = []
        for recipe in self.start_points:
            for source in sources or self.sources:
                if recipe.get("source", source) != source:
                    continue
                if random_weights(source) and recipe.get("freeze_depth", 0.0) > 0:
                    continue
                params = self._start_params(recipe, source)
                if params not in trials:
                    trials.append(params)
        return trials

    def to_dict(self) -> dict[str, Any]:
        """Return the normalised space: every key, defaults filled in, heads merged with their
        registered spaces, ranges as ``{low, high, log, step}``, weights paths absolute.

        The result is JSON-ready; ``SearchSpace.from_dict(space.to_dict())`` gives an equal space.
        """
        normalised: dict[str, Any] = {}
        for key, node in self._nodes.items():
            if key == "head":
                normalised[key] = {
                    name: {param: sub.to_json() for param, sub in params.items()} for name, params in node.items()
                }
            elif key == "extra":
                normalised[key] = {name: sub.to_json() for name, sub in node.items()}
            elif key == "start":
                normalised[key] = [dict(recipe) for recipe in node]
            else:
                normalised[key] = node.to_json()
        return normalised

    def written(self) -> dict[str, Any]:
        """Return :meth:`to_dict` for the keys the space names itself: what the user wrote, normalised."""
        return {key: value for key, value in self.to_dict().items() if key in self._written}

    def defaults(self) -> dict[str, Any]:
        """Return :meth:`to_dict` for the keys the space leaves out: the defaults in force for it."""
        return {key: value for key, value in self.to_dict().items() if key not in self._written}

    def fingerprint(self) -> str:
        """Return a stable 16-hex-digit hash of :meth:`to_dict`: equal spaces, equal fingerprints."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SearchSpace({self.origin}, fingerprint={self.fingerprint()})"

    def _start_params(self, recipe: Mapping[str, Any], source: str) -> dict[str, Any]:
        """The Optuna parameters of one start trial: ``recipe`` for ``source``, the rest defaulted."""
        params: dict[str, Any] = {}
        for key, node in self._nodes.items():
            if key in _PLAIN_SKIPPED or isinstance(node, Fixed):
                continue
            if key == "freeze_depth" and random_weights(source):
                continue
            if key == "augment" and self._start_freeze(params, source) >= 1.0:
                continue
            if key == "source":
                params[key] = source
            else:
                params[key] = node.nearest(recipe[key]) if key in recipe else node.default()
        heads = self._nodes["head"]
        head = recipe.get("head", next(iter(heads)))
        if len(heads) > 1:
            params["head"] = head
        for name, sub in heads[head].items():
            if not isinstance(sub, Fixed):
                params[f"head.{head}.{name}"] = sub.default()
        for name, sub in self._nodes["extra"].items():
            if not isinstance(sub, Fixed):
                params[f"extra.{name}"] = sub.default()
        return params


    def _start_freeze(self, params: dict[str, Any], source: str) -> float:
        """The freeze depth a start trial of ``source`` trains with, given its parameters so far."""
        if random_weights(source):
            return 0.0
        return params.get("freeze_depth", self._nodes["freeze_depth"].default())

