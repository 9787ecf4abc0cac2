"""`Backoff`: how long the supervisor waits before restarting a child that died."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Give restart delays: ``first`` seconds, doubling up to ``most``; a child that ran
    ``reset_after`` seconds or more before dying starts the series again.

    A child that dies at once over and over (a broken database URL, a crash at start) is
    restarted less and less often instead of in a tight loop; one that dies after running a
    while is restarted at once.

    Args:
        first: the first delay (seconds).
        most: the longest delay.
        reset_after: how long a child must have run for its death to reset the delay.
    """

    def __init__(self, first: float = 0.1, most: float = 30.0, reset_after: float = 60.0) -> None:
        if not 0 < first <= most:
            raise ValueError(f"need 0 < first <= most, got first={first!r}, most={most!r}")
        self.first = first
        self.most = most
        self.reset_after = reset_after
        self._next = first

    def next(self, ran: float) -> float:
        """Return the delay before restarting a child that died after running ``ran`` seconds."""
        if ran >= self.reset_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.most)
        return delay
