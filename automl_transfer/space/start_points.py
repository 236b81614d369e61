"""Start points: known-good recipes a search tries first, for every source, before sampling.

A space's ``start`` key lists recipes as mappings of key to value (``{freeze_depth: 0.0, lr:
3.0e-3}``). When a study is created, each recipe is turned into one fixed trial per source
of the space (recipe after recipe, sources in the order given, or ranked when a ranking is
known) and enqueued, so the first trials are strong ones and the sampler learns from them.
Keys a recipe leaves out take the middle of their range or their first choice; values outside
the space are moved to its nearest value; a recipe that freezes layers is not run for a
source without pretrained weights (``@none``), whose layers are never frozen.

A space without ``start`` gets :data:`DEFAULT_START_POINTS`; ``start: []`` turns them off.
"""

from __future__ import annotations

#: The portfolio a space gets when it names no ``start`` of its own, best first: a full fine-tune
#: and a half-frozen one. Chosen on few-shot digits tasks (bench/RESULTS.md): a linear probe
#: (freeze 1, lr 0.1) scored 5 points below them and, when a 5-image validation split picked it,
#: cost the portfolio 0.009 of mean test accuracy, so it is not in by default.
DEFAULT_START_POINTS: tuple[dict[str, object], ...] = (
    {"freeze_depth": 0.0, "lr": 3.0e-3},
    {"freeze_depth": 0.5, "lr": 3.0e-3},
)
