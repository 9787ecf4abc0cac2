"""`StubTelemetry`: records every hook call, for tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pydynflow.adapters.telemetry.base import Telemetry

__all__ = ["StubTelemetry"]


class StubTelemetry(Telemetry):
    """Keep what the engine reported: ``calls`` is a list of ``(hook, details)``."""

    enabled = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def committed(self, requests: Sequence[Any], seconds: float) -> None:
        """Record the number of change sets and the seconds."""
        self._record("committed", (len(requests), seconds))

    def event_rejected(self) -> None:
        """Record a refused event."""
        self._record("event_rejected", None)

    def worker_restarted(self, kind: str) -> None:
        """Record a restart of a ``kind`` worker."""
        self._record("worker_restarted", kind)

    def watch(self, world: Any) -> None:
        """Record the world watched."""
        self._record("watch", world)

    def process_exited(self, pid: int) -> None:
        """Record a child's exit."""
        self._record("process_exited", pid)

    def _record(self, hook: str, details: Any) -> None:
        with self._lock:
            self.calls.append((hook, details))
