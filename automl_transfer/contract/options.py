"""Options in a dataset's location, written ``key=value,key=value`` (``digits:classes=0-4,size=32``)."""

from __future__ import annotations

from typing import Any, Callable

from automl_transfer.errors import DatasetError


def positive_int(text: str) -> int:
    """Convert option text to an integer of at least 1.

    :raises ValueError: for text that is not a whole number, or a number below 1.
    """
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """Convert option text to an integer of at least 0.

    :raises ValueError: for text that is not a whole number, or a negative number.
    """
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def parse_options(location: str | None, options: dict[str, Callable[[str], Any]], plugin: str) -> dict[str, Any]:
    """Parse a dataset location written ``key=value,key=value``.

    A piece without ``=`` continues the previous value, so a value may hold commas:
    ``classes=0,2,4,per_class=10`` gives ``classes="0,2,4"`` and ``per_class="10"``.

    :param location: the text after ``PLUGIN:``, or ``None`` for no options.
    :param options: each valid key mapped to a converter from text (``int``, :func:`positive_int`
        ...) that raises ``ValueError`` for a bad value.
    :param plugin: the plugin name, for messages.
    :returns: the converted values of the keys given (defaults are the caller's business).
    :raises DatasetError: for an unknown key (listing the valid ones), a repeated key, a
        piece before the first key, or a value its converter rejects.
    """
    raw: dict[str, str] = {}
    key = None
    for piece in (location or "").split(","):
        if "=" in piece:
            key, _, value = piece.partition("=")
            key = key.strip()
            if key not in options:
                valid = ", ".join(sorted(options))
                raise DatasetError(f"{plugin}: unknown option {key!r}; valid options are {valid}")
            if key in raw:
                raise DatasetError(f"{plugin}: option {key!r} is given twice")
            raw[key] = value.strip()
        elif key is not None:
            raw[key] += "," + piece.strip()
        elif piece.strip():
            raise DatasetError(f"{plugin}: expected key=value options, got {piece!r}; e.g. {plugin}:seed=0")
    parsed = {}
    for key, value in raw.items():
        try:
            parsed[key] = options[key](value)
        except ValueError as error:
            raise DatasetError(f"{plugin}: option {key}={value!r} is not valid: {error}") from None
    return parsed
