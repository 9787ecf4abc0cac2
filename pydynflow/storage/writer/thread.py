"""`ThreadWriter`: transactions on the persistence actor's own thread.

For databases no other process can open (in-memory SQLite) and for a `Storage` built on a
peewee database object; ``PYDYNFLOW_PERSISTENCE=thread`` picks it for any database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydynflow.errors import FatalPersistenceError
from pydynflow.storage.writer.base import Done, FatalOnce, OnFatal, wait_for
from pydynflow.storage.writer.changes import ChangeSet
from pydynflow.storage.writer.commit import FATAL_TIMEOUT, commit_until, failure, log_retry

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = ["ThreadWriter"]


class ThreadWriter:
    """Write batches on the calling thread (the persistence actor's own).

    Args:
        storage: where to write.
        fatal_timeout: seconds a transaction failing for a passing reason is retried before
            its batch fails with `FatalPersistenceError`.
        on_fatal: called once, on the submitting thread, with the first such error (before
            that batch's ``done``).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        fatal_timeout: float = FATAL_TIMEOUT,
        on_fatal: OnFatal | None = None,
    ) -> None:
        self.storage = storage
        self.fatal_timeout = fatal_timeout
        self.transactions = 0
        self._on_fatal = FatalOnce(on_fatal)

    def submit(self, requests: Sequence[ChangeSet], done: Done) -> None:
        """Commit ``requests`` now, then call ``done`` (on this thread)."""
        deadline = time.monotonic() + self.fatal_timeout
        outcome = commit_until(self.storage, requests, deadline=deadline, notice=log_retry)
        self.transactions += 1
        error = failure(outcome.error, outcome.fatal)
        if isinstance(error, FatalPersistenceError):
            self._on_fatal(error)  # first: the owner knows before any sender learns it
        done(outcome.refused, error)

    def submit_all(self, batches: Sequence[tuple[Sequence[ChangeSet], Done]]) -> None:
        """`submit` each ``(requests, done)`` batch, in order."""
        for requests, done in batches:
            self.submit(requests, done)

    def write(self, requests: Sequence[ChangeSet]) -> set[int]:
        """Commit ``requests``; return the indexes of refused claims.

        Raises:
            PersistenceError: the transaction failed (`FatalPersistenceError`: for good).
        """
        return wait_for(self, requests)

    def drain(self, timeout: float | None = None) -> bool:
        """Nothing is ever in flight: return True."""
        return True

    def wait_ready(self) -> None:
        """Ready at once: the storage is open."""

    def close(self) -> None:
        """Nothing to release: the storage belongs to the world."""
