"""The trial settings, declared once: each key of a search space with its type, default, bounds and help.

:data:`SETTINGS` is the one declaration. The search-space parser
(:mod:`automl_transfer.space.parser`) reads its keys, kinds, bounds and defaults from it; the
trial's parameters (:class:`~automl_transfer.training.params.TrialParams`) and the trainer's
settings (:class:`~automl_transfer.training.settings.TrialSettings`) take their fields from it;
the README's table of keys is :func:`readme_table`'s text, and a test holds it there. A new
search dimension is one more :class:`Setting` here (and the code that uses it).

The table is read when it is used (:func:`settings_by_name`), never copied at import, so a
test can add a setting for the length of one test. It imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automl_transfer.contract.components import MAX_IMAGE_SIZE


class _Required:
    """The type of :data:`REQUIRED`, which reads as its name in messages and reprs."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: The ``default`` of a setting the user must give (``source``).
REQUIRED: Any = _Required()

# Start points are known-good recipes a search tries first, for every source, before sampling.
# A space's ``start`` key lists them as mappings of key to value (``{freeze_depth: 0.0, lr: 3.0e-3}``).
# When a study is created, each becomes one fixed trial per source (recipe after recipe, sources in
# the space's order or ranked), enqueued so the sampler learns from strong first trials. Keys a
# recipe leaves out take the middle of their range or their first choice; values outside the space
# move to its nearest value; a recipe that freezes layers does not run for a source with random
# weights (``@none``). ``start: []`` turns them off (:meth:`SearchSpace.start_trials`).

#: The portfolio a space gets when it names no ``start`` of its own, best first: a full fine-tune
#: and a half-frozen one. Chosen on few-shot digits tasks (bench/RESULTS.md): a linear probe
#: (freeze 1, lr 0.1) scored 5 points below them and, when a 5-image validation split picked it,
#: cost the portfolio 0.009 of mean test accuracy, so it is not in by default.
DEFAULT_START_POINTS: tuple[dict[str, object], ...] = (
    {"freeze_depth": 0.0, "lr": 3.0e-3},
    {"freeze_depth": 0.5, "lr": 3.0e-3},
)

#: The Python type of a setting's value, by kind (``image_size``'s may also be ``None``).
KIND_TYPES: dict[str, Any] = {
    "float": float,
    "int": int,
    "augment": str,
    "source": str,
    "head": str,
    "extra": dict,
    "start": tuple,
}


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting accepts; ``None`` leaves a side open-ended.

    :param why: said after a violation (``BatchNorm layers cannot train on one image at a time``).
    """

    low: float | None = None
    high: float | None = None
    low_excluded: bool = False
    high_excluded: bool = False
    why: str = ""

    def violation(self, value: float) -> str | None:
        """Return what is wrong with ``value`` (``"must be at most 1"``), or ``None``."""
        why = f" ({self.why})" if self.why else ""
        if self.low is not None and (value < self.low or (self.low_excluded and value == self.low)):
            return f"must be {'greater than' if self.low_excluded else 'at least'} {self.low:g}{why}"
        if self.high is not None and (value > self.high or (self.high_excluded and value == self.high)):
            return f"must be {'less than' if self.high_excluded else 'at most'} {self.high:g}{why}"
        return None


_SAME = object()


@dataclass(frozen=True)
class Setting:
    """One key of a search space, and one field of every trial's parameters.

    :param name: the key (``lr``), the Optuna parameter's name when searched.
    :param kind: its value type: ``float``, ``int``, ``augment`` (a strength's name),
        ``source`` (``PLUGIN:MODEL[@WEIGHTS]``), ``head``, ``extra`` (plugin settings) or
        ``start`` (start points, not a trial field).
    :param default: the value of a space that leaves the key out, in the space's own form (a
        range as ``{low, high, log}``); :data:`REQUIRED` when the key must be given.
    :param help: the README table's "Values" text.
    :param bounds: the numbers a ``float`` or ``int`` setting accepts.
    :param nullable: ``null`` is a value too (``image_size``: the source's own size).
    :param trains: the trainer reads it: it is a field of ``TrialSettings``.
    :param absent: what a trial recorded before the setting existed means (by default its
        ``default``); also ``TrialSettings``' default for it. A new setting keeps old runs
        resumable when its default keeps the old behaviour.
    :param shown_default: the README's "Default" text, when it is not the default's YAML.
    """

    name: str
    kind: str
    default: Any
    help: str
    bounds: Bounds = Bounds()
    nullable: bool = False
    trains: bool = False
    absent: Any = _SAME
    shown_default: str = ""

    @property
    def value_type(self) -> Any:
        """The Python type of the setting's value in a trial (``int | None`` for ``image_size``)."""
        kind_type = KIND_TYPES[self.kind]
        return kind_type | None if self.nullable else kind_type

    @property
    def before_it_existed(self) -> Any:
        """The value runs made before the setting existed trained with: ``absent`` when declared, else the default."""
        return self.default if self.absent is _SAME else self.absent

    @property
    def fallback(self) -> Any:
        """What a record (or a ``TrialSettings``) that lacks the setting means: ``absent``, else a default
        that is one value; :data:`REQUIRED` for a required setting or a default range (``lr``)."""
        value = self.before_it_existed
        return REQUIRED if isinstance(value, dict) and self.kind != "extra" else value


#: Every key of a search space, in the order trials receive them.
SETTINGS: tuple[Setting, ...] = (
    Setting("source", "source", REQUIRED, "`PLUGIN:MODEL[@WEIGHTS]`; `@none` = random init, `@FILE` = local weights",
            shown_default="required"),
    Setting("freeze_depth", "float", 0.0,
            "fraction of the backbone's layer groups frozen, from the input side, 0 to 1", Bounds(0.0, 1.0)),
    Setting("lr", "float", {"low": 1.0e-5, "high": 1.0e-2, "log": True}, "AdamW learning rate, > 0",
            Bounds(0.0, low_excluded=True), trains=True),
    Setting("weight_decay", "float", 0.05, "AdamW weight decay, >= 0", Bounds(0.0), trains=True),
    Setting("l2sp", "float", 0.0, "pull toward the pretrained weights (L2-SP), >= 0; `0` turns it off",
            Bounds(0.0), trains=True),
    Setting("l1", "float", 0.0, "L1 penalty `l1 · Σ abs(w)` on the trainable weight matrices and kernels "
            "(not biases or norms), >= 0; `0` turns it off", Bounds(0.0), trains=True),
    Setting("head", "head", "linear", "the classification head, see below"),
    Setting("epochs", "int", 10, "whole number >= 1: the most epochs a trial trains", Bounds(1), trains=True),
    Setting("batch_size", "int", 64,
            "whole number >= 2: the most images per step (batches are near-equal, none dropped)",
            Bounds(2, why="BatchNorm layers cannot train on one image at a time"), trains=True),
    Setting("image_size", "int", None,
            f"side of the square training images, 16 to {MAX_IMAGE_SIZE}; `null` = the source's own size",
            Bounds(16, MAX_IMAGE_SIZE), nullable=True),
    Setting("label_smoothing", "float", 0.0, "from 0 up to (not including) 1",
            Bounds(0.0, 1.0, high_excluded=True), trains=True),
    Setting("augment", "augment", "light",
            "`none`, `light` (crops keeping at least 80% of the image, no flip: safe for small images) or "
            "`strong` (crops down to a quarter of the image, flips); `[light, strong]` searches it", trains=True),
    Setting("warmup_epochs", "float", 1.0, "epochs of linear learning-rate warm-up, >= 0", Bounds(0.0), trains=True),
    Setting("min_steps", "int", 200, "the fewest optimiser steps a trial takes: a small training split makes "
            "several passes per epoch; `0` = one pass", Bounds(0), trains=True, absent=0),
    Setting("patience", "int", 5, "stop a trial after this many epochs without improvement (its best epoch's "
            "weights are kept); `0` = train every epoch", Bounds(0), trains=True, absent=0),
    Setting("extra", "extra", {}, "settings of the regularizers and batch transforms plugins declare "
            "(`mixup`, `cutmix`, `delta`, `bss` built in), see below", trains=True),
    Setting("start", "start", DEFAULT_START_POINTS, "start points: a list of recipes (`{freeze_depth: 0.0, lr: "
            "3.0e-3}`), each run first for every source; `[]` = none",
            shown_default="a full fine-tune and a half-frozen one at lr 3e-3"),
)


def settings_by_name() -> dict[str, Setting]:
    """Return :data:`SETTINGS` by name, in their order (read now, so a test may extend the table)."""
    return {setting.name: setting for setting in SETTINGS}


def trial_fields() -> tuple[Setting, ...]:
    """Return the settings every trial holds a value of (all but ``start``)."""
    return tuple(setting for setting in SETTINGS if setting.kind != "start")


def defaults() -> dict[str, Any]:
    """Return ``{key: default}`` for every key a space may leave out, in the space's own form."""
    return {setting.name: setting.default for setting in SETTINGS if setting.default is not REQUIRED}


def readme_table() -> str:
    """Return the README's table of search-space keys (Key, Values, Default when omitted), one row per setting."""
    rows = ["| Key | Values | Default when omitted |", "|---|---|---|"]
    for setting in SETTINGS:
        rows.append(f"| `{setting.name}` | {setting.help} | {setting.shown_default or f'`{yaml_text(setting.default)}`'} |")
    return "\n".join(rows)


def yaml_text(value: Any) -> str:
    """Return ``value`` written as in a search-space file (``null``, ``true``, ``{low: 1.0e-5, ...}``).

    :param value: ``None``, a bool, number, text, list or mapping of them.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and "e" in repr(value):
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    return str(value)
