"""Engine logging with structlog: every line carries world, plan, step, action and phase.

Lines are JSON when stderr is not a terminal (daemons, CI, log shippers) and coloured,
aligned key/value text when it is. `configure_logging` runs once, the first time a world
starts, unless the application configured structlog itself (then it is left alone).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog

_configured = False
_lock = threading.Lock()


def configure_logging(level: int | str | None = None, *, force: bool = False) -> None:
    """Configure structlog for pydynflow (JSON off a terminal, colours on one)."""
    global _configured, _level
    with _lock:
        if _configured and not force:
            return
        if structlog.is_configured() and not force:
            _configured = True  # the application's own configuration: let it filter
            _level = logging.NOTSET
            return
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        renderer: Any
        if sys.stderr.isatty():
            renderer = structlog.dev.ConsoleRenderer(colors=True)
        else:
            renderer = structlog.processors.JSONRenderer()
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
