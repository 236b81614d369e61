"""Class names as every part of the tool takes them: never empty or blank, shown without control characters.

A class name comes from a dataset plugin (a folder name, a CSV label) or from a ``model.json``
someone shared, so it may hold anything a file name or a JSON string can: an escape sequence
that clears the terminal (``"\\x1b[2J"``), a tab or a newline that would break
``predict``'s tab-separated lines. Names are kept as they are (in ``model.json``, in
``--json`` output); :func:`printable` is how they are shown on a terminal or in plain text.
An empty or blank name (``""``, ``" "``) is refused wherever names come in
(:func:`name_problem`): it would print as an empty label, which no one can tell apart.
"""

from __future__ import annotations

import unicodedata


def name_problem(name: object) -> str | None:
    """Return what is wrong with a class name, or ``None`` when it is fine.

    :param name: the name as a plugin or a file gave it.
    :returns: ``"is not a text"`` or ``"is empty or blank"``, or ``None``.
    """
    if not isinstance(name, str):
        return "is not a text"
    if not name.strip():
        return "is empty or blank"
    return None


def printable(text: str) -> str:
    """Return ``text`` with each control character written as its Python escape, for a terminal or a TSV line.

    Control characters (C0, DEL and C1: escape, tab, newline ...) become ``\\x1b``, ``\\t``,
    ``\\n``; everything else, letters of any script and undecodable file-name bytes included,
    is kept as it is.

    :param text: a class name or a path.
    :returns: the text, safe to print.
    """
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) == "Cc" else char for char in text
    )
