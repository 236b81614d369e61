"""A validated search space: it samples one trial's parameters and records its identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import optuna

from automl_transfer.space.parser import Choice, Parser


class SearchSpace:
    """A validated search space: samples concrete trial parameters and records its identity.

    Build one with :func:`load_space` or :meth:`SearchSpace.from_dict`; the format is described
    in this module's docstring.

    :ivar origin: where the space came from (``preset 'small'``, a file path), for messages.
    """

    def __init__(self, nodes: dict[str, Any], origin: str):
        self._nodes = nodes
        self.origin = origin

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
        return cls(Parser(origin, base).space(data), origin)

    @property
    def sources(self) -> list[str]:
        """The sources this space can choose from, as ``PLUGIN:MODEL[@WEIGHTS]`` texts."""
        node = self._nodes["source"]
        return list(node.choices) if isinstance(node, Choice) else [node.value]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one trial's concrete parameters.

        Only ``trial.suggest_*`` is called, so any sampler and ``optuna.trial.FixedTrial`` work.
        Fixed values are returned without being suggested.

        :param trial: an Optuna trial.
        :returns: a JSON-ready dict with ``source``, ``freeze_depth``, ``lr``, ``weight_decay``,
            ``l2sp``, ``head``, ``head_params``, ``epochs``, ``batch_size``, ``image_size``
            (``None`` for the source's own size), ``label_smoothing``, ``augment``,
            ``warmup_epochs`` and ``extra``.
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
            else:
                params[key] = node.suggest(trial, key)
        return params

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
            else:
                normalised[key] = node.to_json()
        return normalised

    def fingerprint(self) -> str:
        """Return a stable 16-hex-digit hash of :meth:`to_dict`: equal spaces, equal fingerprints."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SearchSpace({self.origin}, fingerprint={self.fingerprint()})"
