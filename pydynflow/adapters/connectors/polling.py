"""`PollingConnector`: wake at a fixed short interval (SQLite, one host)."""

from __future__ import annotations

import threading

from pydynflow.adapters.connectors.base import Connector


class PollingConnector(Connector):
    """Wake every ``interval`` seconds; SQLite has no way to notify another process."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._interrupted = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Sleep for the interval (or ``timeout``, if shorter); never notified."""
        interrupted = self._interrupted.wait(min(timeout, self.interval))
        self._interrupted.clear()
        return interrupted

    def interrupt(self) -> None:
        """End a pending `wait` at once."""
        self._interrupted.set()

    def close(self) -> None:
        """Nothing to release."""
