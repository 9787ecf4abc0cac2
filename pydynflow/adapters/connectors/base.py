"""`Connector`: the wake-ups of one world's dispatch thread."""

from __future__ import annotations

import abc

POLL_INTERVAL = 0.01
"""Seconds between two looks at the inboxes when nothing can wake a world (SQLite)."""


class Connector(abc.ABC):
    """Block a world's dispatch thread until its inboxes may hold something new.

    A connector may wake it for nothing (the thread then finds its inboxes empty); it must
    never sleep through a request stored before `wait` was called.
    """

    @abc.abstractmethod
    def wait(self, timeout: float) -> bool:
        """Return after at most ``timeout`` seconds: True if woken by a notification."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Make a pending (or the next) `wait` return at once; from any thread."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the connector holds (called by the waiting thread, once done)."""
