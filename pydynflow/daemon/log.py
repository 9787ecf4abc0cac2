"""The supervisor's log: JSON lines on stdout, one per event, whatever stdout is.

The supervisor's lines say what happened to its children (started, exited, restarted,
invalidated, stopped); the worlds in the children log as the engine does (`pydynflow.logging`:
JSON lines on stderr off a terminal). The level is ``PYDYNFLOW_LOG_LEVEL`` (default INFO);
children get INFO too unless it is set.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["LOG_LEVEL", "daemon_logger", "log_level"]

LOG_LEVEL = "PYDYNFLOW_LOG_LEVEL"
"""The environment variable naming the lowest level logged."""


def log_level() -> int:
    """Return the level ``PYDYNFLOW_LOG_LEVEL`` names (INFO if unset or unknown)."""
    level = logging.getLevelName(os.environ.get(LOG_LEVEL, "INFO").upper())
    return level if isinstance(level, int) else logging.INFO


def daemon_logger(**context: Any) -> Any:
    """Return a logger writing JSON lines to stdout, bound to ``context``.

    It leaves structlog's global configuration (the engine's, on stderr) alone.
    """
    logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stdout),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level()),
        cache_logger_on_first_use=False,
    )
    return logger.bind(logger="pydynflow.worker", **context)
