"""Plugins: the action modules installed distributions declare in ``pydynflow.actions``.

A distribution lists modules (``"pkg.actions"``) or attributes (``"pkg.actions:MyAction"``)
under the entry-point group ``pydynflow.actions``; importing them registers their `Action`
subclasses, so a plugin's ``subscribe = CoreAction`` extends a core action the core never
imports. `load_plugins` imports them once per process, in a stable order (distribution, then
entry-point name); one that fails to import is logged and skipped. Nothing else is imported:
classes come from entry points or from the user's own imports, never from stored data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from pydynflow.logging import get_logger

GROUP = "pydynflow.actions"

_lock = threading.RLock()  # re-entrant: a plugin that creates a World while it is imported
_loaded: tuple[Plugin, ...] | None = None
_loading = False


@dataclass(frozen=True)
class Plugin:
    """One entry point of the ``pydynflow.actions`` group and what loading it did.

    Attributes:
        name: the entry point's name (``demo`` in ``demo = "pkg.actions"``).
        value: what it names: a module, or ``module:attribute``.
        distribution: the name of the distribution that declares it, if known.
        error: why it was skipped (``"ExceptionClass: message"``), or None once loaded.
    """

    name: str
    value: str
    distribution: str | None
    error: str | None = None


def load_plugins() -> tuple[Plugin, ...]:
    """Import every ``pydynflow.actions`` entry point, once per process; return them all.

    Later calls return the first call's result at once. A world calls this when it is
    created, unless ``World(plugins=False)``.
    """
    global _loading, _loaded
    found = _loaded
    if found is not None:
        return found
    with _lock:  # other threads wait here until the plugins are loaded
        if _loaded is not None:
            return _loaded
        if _loading:  # a plugin being imported on this thread creates a World
            return ()
        _loading = True
        try:
            _loaded = _load()
        finally:
            _loading = False
        return _loaded


def _load() -> tuple[Plugin, ...]:
    try:
        points = _entry_points()
    except Exception as exc:  # unreadable metadata must not keep a world from starting
        get_logger().error(
            "plugins not loaded: entry points unreadable", group=GROUP, error=_why(exc)
        )
        return ()
    if not points:
        return ()  # and the logging is left unconfigured
    log = get_logger()
    plugins = []
    for point in points:
        distribution = point.dist.name if point.dist is not None else None
        try:
            point.load()
        except Exception as exc:
            plugin = Plugin(point.name, point.value, distribution, _why(exc))
            log.error(
                "plugin failed to load, skipped",
                entry_point=point.name,
                value=point.value,
                distribution=distribution,
                error=plugin.error,
                exc_info=exc,
            )
        else:
            plugin = Plugin(point.name, point.value, distribution)
            log.info(
                "plugin loaded",
                entry_point=point.name,
                value=point.value,
                distribution=distribution,
            )
        plugins.append(plugin)
    return tuple(plugins)


def _entry_points() -> list[EntryPoint]:
    """Return the group's entry points, each (distribution, name) once, in a stable order."""
    unique: dict[tuple[str, str], EntryPoint] = {}
    for point in entry_points(group=GROUP):
        distribution = point.dist.name if point.dist is not None else ""
        unique.setdefault((distribution, point.name), point)
    return [unique[key] for key in sorted(unique)]


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
