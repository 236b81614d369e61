"""Calling observers: the lifecycle hooks, each plugin on its own, a failure a warning.

Observers (trackers, loggers, the built-in console output) implement the lifecycle hooks of
:mod:`automl_transfer.contract.hookspecs`. :func:`call_observers` calls each plugin's
implementation separately, so one that raises cannot stop the others or the search: it becomes
one :class:`~automl_transfer.registry.manager.PluginWarning` naming the plugin, its distribution,
the error and the file and line that raised it, once per failing hook per search (the count
starts again at each ``search_start``).
"""

from __future__ import annotations

import threading
import traceback
import warnings
from typing import Any

from automl_transfer.registry.manager import (
    PluginWarning,
    call_one_plugin,
    describe,
    load_plugins,
    plugin_label,
    pm,
)

#: Hooks called through :func:`call_observers`, in the order a search calls them.
LIFECYCLE_HOOKS = ("search_start", "search_phase", "trial_start", "epoch_end", "trial_end", "search_end")

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def call_observers(hook_name: str, **kwargs: Any) -> None:
    """Call lifecycle hook ``hook_name`` of each plugin separately, with ``kwargs``.

    An exception raised by one plugin becomes a :class:`PluginWarning` (once per plugin and
    hook until the next ``search_start``); the other plugins are still called and nothing is
    raised. Return values are ignored.

    :param hook_name: one of :data:`LIFECYCLE_HOOKS`.
    :raises ValueError: for any other hook name.
    """
    if hook_name not in LIFECYCLE_HOOKS:
        raise ValueError(f"{hook_name!r} is not a lifecycle hook; expected one of {', '.join(LIFECYCLE_HOOKS)}")
    load_plugins()
    if hook_name == "search_start":
        with _warned_lock:
            _warned.clear()
    implementations = getattr(pm.hook, hook_name).get_hookimpls()
    observers = list(dict.fromkeys(impl.plugin for impl in reversed(implementations)))
    for observer in observers:
        try:
            call_one_plugin(hook_name, observer, kwargs)
        except Exception as exc:
            name, label = plugin_label(observer)
            with _warned_lock:
                if (name, hook_name) in _warned:
                    continue
                _warned.add((name, hook_name))
            warnings.warn(
                f"plugin {name!r} ({label}) failed in {hook_name}: {describe(exc)} (raised at {raised_at(exc)}); "
                "the search goes on; its further failures in this hook are not reported again until the next search",
                PluginWarning,
                stacklevel=2,
            )


def raised_at(exc: BaseException) -> str:
    """Return ``file:line`` of the innermost frame of ``exc``'s traceback (where it was raised)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    return f"{frames[-1].filename}:{frames[-1].lineno}"
