"""Import paths of version 0.1 that plugins may still use; each name now lives elsewhere.

``automl_transfer.hookspecs``, ``.components``, ``.datasets`` and ``.plugins`` were the
documented imports of a plugin author before :mod:`automl_transfer.plugin` gathered them. They
still work, with a ``DeprecationWarning`` naming the new place.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable


def forward(old_module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that serves ``names`` from their new modules, warning once per name.

    :param old_module: the deprecated module's name, for the warning.
    :param names: each old name mapped to the module that now holds it.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(
            f"{old_module}.{name} moved: import it from {names[name]}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
