"""What every writer offers the persistence actor (`Writer`), and the helpers both share.

A writer takes a batch of change sets with ``submit(requests, done)`` and calls
``done(refused, error)`` once the batch is committed or has failed: acknowledgements follow
durability, in the order batches came. A failure that outlasts the fatal timeout reaches the
owner once, through ``on_fatal``, before any sender learns of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydynflow.errors import FatalPersistenceError, PersistenceError
from pydynflow.storage.writer.changes import ChangeSet
from pydynflow.storage.writer.commit import log

__all__ = ["Done", "FatalOnce", "OnFatal", "Writer", "wait_for"]

Done = Callable[[set[int], "PersistenceError | None"], None]
"""Called once a submitted batch is committed: (indexes of refused claims, error or None)."""
OnFatal = Callable[[FatalPersistenceError], object]
"""Called with the first `FatalPersistenceError` a writer delivers."""


class Writer(Protocol):
    """A writer of batches of change sets (`ThreadWriter`, `ProcessWriter`)."""

    transactions: int

    def submit(self, requests: Sequence[ChangeSet], done: Done) -> None:
        """Commit ``requests``, then call ``done``."""

    def submit_all(self, batches: Sequence[tuple[Sequence[ChangeSet], Done]]) -> None:
        """`submit` each ``(requests, done)`` batch, in order."""

    def write(self, requests: Sequence[ChangeSet]) -> set[int]:
        """Commit ``requests`` and wait; return the indexes of refused claims."""

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every batch submitted so far is acknowledged; False on timeout."""

    def wait_ready(self) -> None:
        """Wait until the writer can commit."""

    def close(self) -> None:
        """Release what the writer holds, once what it was sent is committed."""


class FatalOnce:
    """Call the owner's ``on_fatal`` once, with the first `FatalPersistenceError` delivered."""

    def __init__(self, callback: OnFatal | None) -> None:
        self.callback = callback
        self._first = threading.Lock()  # taken by the first call, never released

    def __call__(self, error: FatalPersistenceError) -> None:
        """Pass ``error`` to the callback, unless an earlier one was."""
        if self.callback is None or not self._first.acquire(blocking=False):
            return
        try:
            self.callback(error)
        except Exception:  # a broken callback must not stop the writer
            log().exception("on_fatal callback failed")


def wait_for(writer: Writer, requests: Sequence[ChangeSet]) -> set[int]:
    """Submit ``requests`` to ``writer`` and wait for the commit (for tests and tools).

    Raises:
        PersistenceError: the transaction failed (`FatalPersistenceError`: for good).
    """
    answer: list[Any] = []
    committed = threading.Event()

    def done(refused: set[int], error: PersistenceError | None) -> None:
        answer[:] = [refused, error]
        committed.set()

    writer.submit(requests, done)
    committed.wait()
    refused, error = answer
    if error is not None:
        raise error
    return refused  # type: ignore[no-any-return]
