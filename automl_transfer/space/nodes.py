"""The parameter nodes a search space is made of: fixed values, choices and ranges.

Each node samples itself through ``trial.suggest_*`` (so any Optuna sampler and
``FixedTrial`` work), turns back into its YAML form, and gives the value a start point uses
when the start point says nothing of it (:meth:`default`) or names a value outside the node
(:meth:`nearest`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import optuna


@dataclass(frozen=True)
class Fixed:
    """A value used as is; never an Optuna parameter."""

    value: Any

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        return self.value

    def to_json(self) -> Any:
        return self.value

    def default(self) -> Any:
        """The value itself."""
        return self.value

    def nearest(self, value: Any) -> Any:
        """The value itself: a fixed value is never changed."""
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical Optuna parameter."""

    choices: tuple

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def to_json(self) -> list:
        return list(self.choices)

    def default(self) -> Any:
        """The first choice."""
        return self.choices[0]

    def nearest(self, value: Any) -> Any:
        """``value`` when it is a choice, else the closest numeric choice, else the first."""
        if value in self.choices and all(type(choice) is type(value) for choice in self.choices if choice == value):
            return value
        numbers = [choice for choice in self.choices if _is_number(choice)]
        if _is_number(value) and numbers:
            return min(numbers, key=lambda choice: abs(choice - value))
        return self.choices[0]


@dataclass(frozen=True)
class Range:
    """An integer or float Optuna parameter between ``low`` and ``high``."""

    low: Union[int, float]
    high: Union[int, float]
    log: bool
    step: Union[int, float, None]
    integer: bool

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Union[int, float]:
        if self.integer:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}

    def default(self) -> Union[int, float]:
        """The middle of the range: geometric on a log scale, on the grid when there is a step."""
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return self.nearest(middle)

    def nearest(self, value: Any) -> Union[int, float]:
        """``value`` clamped into the range and put on its grid (a whole number for an integer range)."""
        if not _is_number(value):
            return self.default()
        clamped = min(max(value, self.low), self.high)
        if self.step:
            clamped = self.low + round((clamped - self.low) / self.step) * self.step
            clamped = min(clamped, self.high)
        return int(round(clamped)) if self.integer else float(clamped)


Node = Union[Fixed, Choice, Range]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
