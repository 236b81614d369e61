r"""The search-space format: checking raw YAML data and turning it into parameter nodes.

The format (keys, the three forms of a value, heads, weight files, plugin settings, start
points) is described in the README's "Search-space format" section, which is the reference
for users; :class:`Parser` enforces it and says, for the first fault it meets, which key is
wrong and why.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from automl_transfer.contract import trial_settings
from automl_transfer.contract.trial_settings import Bounds
from automl_transfer.data.augmentations import AUGMENTATIONS
from automl_transfer.errors import PluginError, SearchSpaceError, UnknownComponentError
from automl_transfer.model.source_spec import SOURCE_FORMAT, SourceSpec
from automl_transfer.registry import extra_settings, get_component
from automl_transfer.space.nodes import Choice, Fixed, Node, Range

_RANGE_KEYS = ("low", "high", "log", "step")


def start_keys() -> tuple[str, ...]:
    """The keys a start point may set: every key that can be searched, ``head`` by name."""
    return tuple(setting.name for setting in trial_settings.trial_fields() if setting.kind != "extra")


_EXPECTED = {
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
    "augment": f"an augmentation strength ({', '.join(AUGMENTATIONS)})",
    "source": "a source text PLUGIN:MODEL[@WEIGHTS]",
    "any": "a number, text, true/false or null",
}


def close_match(word: Any, options: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the option closest to ``word``, or ``""``."""
    matches = difflib.get_close_matches(str(word), options, n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _type_name(value: Any) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"


class Parser:
    """Turns raw YAML data into parameter nodes, raising :class:`SearchSpaceError` on the first fault."""

    def __init__(self, origin: str, base_dir: Path):
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, path: str, problem: str) -> SearchSpaceError:
        where = f"{self.origin}: {path}" if path else self.origin
        return SearchSpaceError(f"{where}: {problem}")

    def space(self, raw: Any) -> dict[str, Any]:
        """Return ``{key: node}`` for every top-level key, defaults filled in."""
        if raw is None:
            raise self.fail("", "the search space is empty; it needs at least a `source` list")
        if not isinstance(raw, Mapping):
            raise self.fail("", f"expected a mapping of keys ({', '.join(trial_settings.settings_by_name())}), got {_type_name(raw)}")
        keys = trial_settings.settings_by_name()
        valid = list(keys)
        for key in raw:
            if key not in keys:
                raise self.fail(str(key), f"unknown key{close_match(key, valid)}; valid keys are {', '.join(valid)}")
        if "source" not in raw:
            raise self.fail("source", "missing; list the backbones to transfer from: source: [timm:resnet18.a1_in1k]")
        nodes: dict[str, Any] = {}
        for key, spec in keys.items():
            value = raw.get(key, spec.default)
            if spec.kind == "head":
                nodes[key] = self.heads(key, value)
            elif spec.kind == "extra":
                nodes[key] = self.extra(key, value)
            elif spec.kind == "start":
                nodes[key] = self.start_points(key, value, nodes)
            else:
                nodes[key] = self.value(key, value, spec.kind, spec.bounds, spec.nullable)
        return nodes

    def value(
        self,
        path: str,
        raw: Any,
        kind: str,
        bounds: Bounds = Bounds(),
        nullable: bool = False,
        integer: bool | None = None,
    ) -> Node:
        """Parse a scalar, list or range of ``kind`` (``any`` for head and plugin parameters)."""
        if isinstance(raw, list):
            if not raw:
                raise self.fail(path, "an empty list offers no choice; give at least one value")
            choices = [self.scalar(f"{path}[{index}]", item, kind, bounds, nullable) for index, item in enumerate(raw)]
            seen: set = set()
            for choice in choices:
                if (type(choice), choice) in seen:
                    raise self.fail(path, f"lists the choice {choice!r} twice")
                seen.add((type(choice), choice))
            return Choice(tuple(choices))
        if isinstance(raw, Mapping):
            if kind in ("bool", "source", "augment"):
                raise self.fail(path, f"cannot be a range; give {_EXPECTED[kind]} or a list of them")
            return self.range(path, raw, kind, bounds, integer)
        return Fixed(self.scalar(path, raw, kind, bounds, nullable))

    def scalar(self, path: str, raw: Any, kind: str, bounds: Bounds, nullable: bool) -> Any:
        """Check one value against ``kind`` and ``bounds`` and return it normalised."""
        if raw is None and nullable:
            return None
        if kind == "source":
            return self.source(path, raw)
        if kind == "augment":
            if isinstance(raw, bool):  # the 0.1 form: true was the strong crop-and-flip recipe
                return "strong" if raw else "none"
            if raw not in AUGMENTATIONS:
                raise self.fail(path, f"expected {_EXPECTED['augment']}, got {_type_name(raw)}{close_match(raw, list(AUGMENTATIONS))}")
            return raw
        if kind == "bool":
            if not isinstance(raw, bool):
                raise self.fail(path, f"expected true or false, got {_type_name(raw)}")
            return raw
        if kind == "any":
            if raw is not None and not isinstance(raw, (bool, int, float, str)):
                raise self.fail(path, f"expected {_EXPECTED['any']}, got {_type_name(raw)}")
            return raw
        if kind == "int" and (isinstance(raw, bool) or not isinstance(raw, int)):
            raise self.fail(path, f"expected a whole number, got {_type_name(raw)}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise self.fail(path, f"expected a number, got {_type_name(raw)}")
        problem = bounds.violation(raw)
        if problem:
            raise self.fail(path, f"{raw!r} {problem}")
        return raw if kind == "int" else float(raw)

    def range(self, path: str, raw: Mapping, kind: str, bounds: Bounds, integer: bool | None) -> Range:
        """Parse ``{low, high, log?, step?}``; ``integer`` forces the range type for ``any`` values."""
        for key in raw:
            if key not in _RANGE_KEYS:
                hint = close_match(key, list(_RANGE_KEYS))
                raise self.fail(path, f"unknown range key {key!r}{hint}; a range has low, high, log, step")
        if "low" not in raw or "high" not in raw:
            raise self.fail(path, "a range needs both low and high")
        low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
        if kind == "int":
            integer = True
        elif kind == "float":
            integer = False
        elif integer is None:
            integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and (
                step is None or (isinstance(step, int) and not isinstance(step, bool))
            )
        number_kind = "int" if integer else "float"
        low = self.scalar(f"{path}.low", low, number_kind, bounds, False)
        high = self.scalar(f"{path}.high", high, number_kind, bounds, False)
        if step is not None:
            step = self.scalar(f"{path}.step", step, number_kind, Bounds(0, low_excluded=True), False)
        if not isinstance(log, bool):
            raise self.fail(f"{path}.log", f"expected true or false, got {_type_name(log)}")
        if low > high:
            raise self.fail(path, f"low ({low}) is greater than high ({high})")
        if log and low <= 0:
            raise self.fail(path, f"a log range needs low > 0, got low {low}")
        if log and step is not None and not (integer and step == 1):
            raise self.fail(path, "log and step cannot be combined; drop one of them")
        if step is not None:
            count = (high - low) / step
            if abs(count - round(count)) > 1e-9:
                raise self.fail(path, f"high - low ({high - low}) is not a multiple of step ({step})")
        return Range(low, high, log, step, integer)

    def source(self, path: str, raw: Any) -> str:
        """Check ``PLUGIN:MODEL[@WEIGHTS]``; return its canonical text with a weights file made absolute."""
        if not isinstance(raw, str):
            raise self.fail(path, f"expected a source text {SOURCE_FORMAT}, got {_type_name(raw)}")
        try:
            spec = SourceSpec.parse(raw)
        except UnknownComponentError as error:
            raise self.fail(path, str(error)) from error
        if spec.weights_file is not None:
            spec = replace(spec, weights=os.path.normpath(self.base_dir / os.path.expanduser(spec.weights)))
        return str(spec)

    def heads(self, path: str, raw: Any) -> dict[str, dict[str, Node]]:
        """Parse ``head`` into ``{head name: {parameter: node}}`` merged over the registered spaces."""
        heads_form = "a head name, a list of names or a mapping of name to parameters"
        if isinstance(raw, str):
            overrides: Mapping = {raw: None}
        elif isinstance(raw, list):
            if not raw:
                raise self.fail(path, "an empty list offers no choice; name at least one head")
            for index, name in enumerate(raw):
                if not isinstance(name, str):
                    raise self.fail(f"{path}[{index}]", f"expected a head name, got {_type_name(name)}")
            if len(set(raw)) != len(raw):
                raise self.fail(path, "lists a head twice")
            overrides = dict.fromkeys(raw)
        elif isinstance(raw, Mapping):
            if not raw:
                raise self.fail(path, "an empty mapping offers no choice; name at least one head")
            if set(raw) & set(_RANGE_KEYS):
                raise self.fail(path, f"cannot be a range; give {heads_form}")
            overrides = raw
        else:
            raise self.fail(path, f"expected {heads_form}, got {_type_name(raw)}")
        return {str(name): self.head_params(f"{path}.{name}", str(name), params) for name, params in overrides.items()}

    def head_params(self, path: str, name: str, override: Any) -> dict[str, Node]:
        """Merge one head's overrides (``None`` for none) over its registered space."""
        try:
            component = get_component("head", name)
        except UnknownComponentError as error:
            raise self.fail(path, str(error)) from error
        try:
            registered = Parser(f"space of head {name!r}", self.base_dir).parameters(name, component.space)
        except SearchSpaceError as error:
            raise PluginError(
                f"plugin {component.plugin!r} registers head {name!r} with an invalid space: {error}"
            ) from error
        override = {} if override is None else override
        if not isinstance(override, Mapping):
            raise self.fail(path, f"expected a mapping of the head's parameters, got {_type_name(override)}")
        for param in override:
            if param not in registered:
                takes = f"it takes {', '.join(registered)}" if registered else "it takes no parameters"
                hint = close_match(param, list(registered))
                raise self.fail(f"{path}.{param}", f"head {name!r} has no parameter {param!r}{hint}; {takes}")
        merged = {}
        for param, node in registered.items():
            if param in override:
                integer = node.integer if isinstance(node, Range) else None
                merged[param] = self.value(f"{path}.{param}", override[param], "any", integer=integer)
            else:
                merged[param] = node
        return merged

    def start_points(self, path: str, raw: Any, nodes: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        """Parse ``start``: a list of mappings of key to one value (a recipe to try first).

        :param nodes: the space's other keys, parsed (a start point's head must be one of them).
        """
        if raw is None:
            return ()
        if not isinstance(raw, (list, tuple)):
            raise self.fail(path, f"expected a list of mappings (key: value), got {_type_name(raw)}")
        points = []
        for index, point in enumerate(raw):
            where = f"{path}[{index}]"
            if not isinstance(point, Mapping):
                raise self.fail(where, f"expected a mapping of keys to values, got {_type_name(point)}")
            checked = {}
            for key, value in point.items():
                if key not in start_keys():
                    raise self.fail(f"{where}.{key}", f"a start point sets one of {', '.join(start_keys())}")
                spec = trial_settings.settings_by_name()[key]
                if spec.kind == "head":
                    if value not in nodes["head"]:
                        raise self.fail(f"{where}.head", f"{value!r} is not a head of this space ({', '.join(nodes['head'])})")
                    checked[key] = value
                else:
                    checked[key] = self.scalar(f"{where}.{key}", value, spec.kind, spec.bounds, spec.nullable)
            points.append(checked)
        return tuple(points)

    def extra(self, path: str, raw: Any) -> dict[str, Node]:
        """Parse ``extra``: every key must be one a loaded regularizer or batch transform declares."""
        nodes = self.parameters(path, raw)
        if not nodes:
            return nodes
        try:
            declared = sorted(extra_settings())
        except PluginError as error:
            raise self.fail(path, str(error)) from error
        for name in nodes:
            if name not in declared:
                listed = f"the loaded plugins declare {', '.join(declared)}" if declared else "no loaded plugin declares any"
                raise self.fail(
                    f"{path}.{name}",
                    f"no loaded plugin declares this setting{close_match(name, declared)}; {listed} "
                    "(run `automl-transfer plugins` to list them)",
                )
        return nodes

    def parameters(self, path: str, raw: Any) -> dict[str, Node]:
        """Parse a mapping of parameter name to value (``extra``, a head's registered space)."""
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"expected a mapping of parameter names to values, got {_type_name(raw)}")
        return {str(name): self.value(f"{path}.{name}", value, "any") for name, value in raw.items()}
