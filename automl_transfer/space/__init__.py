"""Search spaces: which sources, heads and fine-tuning settings a search tries.

The format is described in :mod:`automl_transfer.space.parser` (and the README's
"Search-space format" section).
"""

from automl_transfer.space.presets import load_space, parse_yaml, preset_names
from automl_transfer.space.space import SearchSpace

__all__ = ["SearchSpace", "load_space", "parse_yaml", "preset_names"]
