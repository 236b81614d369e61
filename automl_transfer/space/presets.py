"""Reading search spaces: presets shipped with the package, YAML files, YAML text."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from automl_transfer.errors import SearchSpaceError
from automl_transfer.space.parser import close_match
from automl_transfer.space.space import SearchSpace

#: The import name of the package holding the preset YAML files (``search_spaces/``).
PRESET_PACKAGE = "automl_transfer_search_spaces"


class _SpaceLoader(yaml.SafeLoader):
    """A safe YAML loader that reads ``1e-4`` as a number and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, origin: str, base_dir: Path | None = None) -> SearchSpace:
    """Parse search-space YAML text.

    :param text: the YAML document.
    :param origin: names the space in error messages (a file path, ``preset 'small'``).
    :param base_dir: the folder relative weights paths are read from (default: the working directory).
    :returns: the search space.
    :raises SearchSpaceError: a YAML syntax error (with its line and column) or an invalid space.
    """
    try:
        raw = yaml.load(text, Loader=_SpaceLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = error.problem or error.context or "cannot be parsed"
        raise SearchSpaceError(f"{origin}: YAML syntax error{where}: {problem}") from error
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{origin}: YAML error: {error}") from error
    return SearchSpace.from_dict(raw, origin=origin, base_dir=base_dir)


def preset_names() -> list[str]:
    """Return the names of the shipped presets (``default``, ``demo``, ``small`` ...), sorted."""
    folder = resources.files(PRESET_PACKAGE)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_space(name_or_path: Union[str, Path, Mapping[str, Any]], origin: str = "search space") -> SearchSpace:
    """Load a preset by name, a search-space YAML file by path, or a search-space mapping.

    A file wins over a preset of the same name. Relative weights paths in a file
    are read relative to the file's folder; in a preset, relative to the working directory.

    :param name_or_path: ``default``, ``small``, ``demo``, the path of a ``.yaml`` file, or a
        mapping in the same format (a study's recorded space).
    :param origin: names a mapping in error messages.
    :returns: the validated search space.
    :raises SearchSpaceError: the preset or file does not exist, cannot be read, or is invalid.
    :raises PluginError: a head's plugin registered an invalid parameter space.
    """
    if isinstance(name_or_path, Mapping):
        return SearchSpace.from_dict(name_or_path, origin=origin)
    text = str(name_or_path)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SearchSpaceError(f"cannot read search space {text}: {error}") from error
        return parse_yaml(content, origin=text, base_dir=path.parent)
    presets = preset_names()
    has_separator = "/" in text or os.sep in text
    looks_like_path = isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or has_separator
    if text in presets and not looks_like_path:
        content = resources.files(PRESET_PACKAGE).joinpath(f"{text}.yaml").read_text(encoding="utf-8")
        return parse_yaml(content, origin=f"preset {text!r}", base_dir=Path.cwd())
    instead = f"give a YAML file or a preset ({', '.join(presets)})"
    if path.exists():
        raise SearchSpaceError(f"search space {text} is not a file; {instead}")
    if looks_like_path:
        raise SearchSpaceError(f"search space file {text} does not exist; {instead}")
    raise SearchSpaceError(
        f"unknown search space {text!r}{close_match(text, presets)}: presets are {', '.join(presets)}, "
        "or give the path of a YAML file"
    )
