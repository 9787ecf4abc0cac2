"""The worker-pool interface the runtime hands user code to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class WorkerPool(Protocol):
    """Run jobs on workers of their own, never on the dispatcher's threads."""

    size: int

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[Any, Any], None]
    ) -> None:
        """Run ``fn(*args)`` on a worker; then call ``on_done(result, error)`` there."""

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking jobs; let the running ones finish (waiting for them if ``wait``)."""
