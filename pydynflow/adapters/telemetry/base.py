"""`Telemetry`: what the engine reports as it runs, as hooks that do nothing here.

The engine calls the current telemetry (`pydynflow.adapters.telemetry.current`) at a few
points: each batch of state changes the persistence actor got committed (its change sets,
from which the finished steps and stored events are read), each event a running plan
refuses, each worker process restarted or exited. Implementations record what they need; ``enabled`` False (this base) lets the hot
paths skip even the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydynflow.storage.writer.changes import ChangeSet

__all__ = ["FINISHED_STEP_STATES", "Telemetry"]

FINISHED_STEP_STATES = frozenset({"success", "error", "skipped", "cancelled"})
"""A step snapshot in one of these states, with an end time, is a finished run of it."""


class Telemetry:
    """No-op hooks; subclass and override the ones you record."""

    enabled = False
    """Whether the engine calls the hooks at all (the base: no)."""

    def committed(self, requests: Sequence[ChangeSet], seconds: float) -> None:
        """A batch of ``requests`` (change sets) was committed, ``seconds`` after the
        persistence actor handed it to its writer."""

    def event_rejected(self) -> None:
        """A running plan refused an event (its step was not waiting for one)."""

    def worker_restarted(self, kind: str) -> None:
        """A worker process was restarted: ``"world"`` (a `pydynflow worker` child) or
        ``"step"`` (a process of a ``processes`` executor's pool)."""

    def watch(self, world: Any) -> None:
        """Sample ``world``'s queues (depth, busy workers) while it runs."""

    def process_exited(self, pid: int) -> None:
        """A child process that reported metrics (a `pydynflow worker` world) exited."""
