"""Engine logging with structlog: every line carries world, plan, step, action and phase.

Lines go to stderr: JSON when stderr is not a terminal (daemons, CI, log shippers) and
coloured, aligned key/value text when it is. `configure_logging` runs once, the first time
a world starts, unless the application configured structlog itself (then it is left alone);
worker processes (``executor="processes"``) configure it as their world did
(`worker_settings`). Its processors merge structlog's context variables, which the engine
binds around each phase call: a line user code logs from ``run`` or ``finalize`` carries
``plan_id``, ``step_id``, ``action_class`` and ``phase``.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog

_configured = False
_json: bool | None = None  # how lines are rendered, once pydynflow configured structlog
_lock = threading.Lock()


def configure_logging(
    level: int | str | None = None, *, force: bool = False, json: bool | None = None
) -> None:
    """Configure structlog for pydynflow (JSON off a terminal, colours on one).

    ``level``: the lowest level logged (default: ``PYDYNFLOW_LOG_LEVEL``, else WARNING);
    ``json``: JSON lines (True) or coloured text (False) instead of deciding by whether
    stderr is a terminal.
    """
    global _configured, _level, _json
    with _lock:
        if _configured and not force:
            return
        if structlog.is_configured() and not force:
            _configured = True  # the application's own configuration: let it filter
            _level = logging.NOTSET
            return
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        if json is None:
            json = not sys.stderr.isatty()
        renderer: Any
        if json:
            renderer = structlog.processors.JSONRenderer()
        else:
            renderer = structlog.dev.ConsoleRenderer(colors=True)
        _json = json
        _level = level if isinstance(level, int) and level else _default_level()
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
        _configured = True


def worker_settings() -> dict[str, Any]:
    """Return `configure_logging` arguments that make a worker process log as this one.

    Empty if the application configured structlog itself: a worker then keeps the
    configuration it got by importing the application's modules, if any, else pydynflow's.
    """
    if not _configured:
        configure_logging()
    if _json is None:
        return {}
    return {"level": _level, "json": _json}


def get_logger(**context: Any) -> Any:
    """Return a structlog logger bound to ``context`` (world_id, plan_id, step_id...)."""
    if not _configured:  # binding resolves the configuration: it must be in place first
        configure_logging()
    return structlog.get_logger("pydynflow").bind(**context)


def _default_level() -> int:
    """Return the level from ``PYDYNFLOW_LOG_LEVEL`` (default WARNING: quiet embedding)."""
    import os

    name = os.environ.get("PYDYNFLOW_LOG_LEVEL", "WARNING").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


def enabled(level: int) -> bool:
    """Return whether lines of ``level`` are logged (check before building costly ones)."""
    if not _configured:
        configure_logging()
    return level >= _level


_level = logging.WARNING
