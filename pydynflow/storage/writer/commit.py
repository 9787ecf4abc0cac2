"""One transaction of change sets, retried while it fails for a passing reason.

A failure is passing when the driver says ``OperationalError`` (a lock held by another
process, a lost connection, a full disk): the transaction is tried again after a growing
pause (`FIRST_PAUSE` doubling up to `MAX_PAUSE`) until a deadline, and then fails for good
(``fatal``). Any other failure (a foreign key, a value that cannot be encoded) ends it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pydynflow.errors import FatalPersistenceError, PersistenceError
from pydynflow.storage.writer.changes import ChangeSet, write_requests

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = [
    "FATAL_TIMEOUT",
    "FIRST_PAUSE",
    "MAX_PAUSE",
    "NOTICE_INTERVAL",
    "Notice",
    "Outcome",
    "commit",
    "commit_until",
    "failure",
    "log",
    "log_retry",
]

FATAL_TIMEOUT = 60.0
"""Seconds a transaction failing for a passing reason is retried (the default)."""
FIRST_PAUSE = 0.01
"""Seconds before the first retry; doubled after each failed attempt."""
MAX_PAUSE = 1.0
"""Seconds between two attempts at most."""
NOTICE_INTERVAL = 1.0
"""Seconds between two warnings about one transaction being retried."""

Notice = Callable[[int, float, str], None]
"""Told about a transaction being retried: (failed attempts, seconds since the first, cause)."""


class Outcome(NamedTuple):
    """How `commit_until` ended: the refused claims, or what went wrong."""

    refused: set[int]
    error: str | None = None
    fatal: bool = False
    """Failed for a passing reason until the deadline."""
    retried: bool = False
    """Committed, but not at the first attempt."""


def commit(
    storage: Storage,
    requests: Sequence[ChangeSet],
    after: Callable[[set[int]], Any] | None = None,
    *,
    fatal_timeout: float = FATAL_TIMEOUT,
) -> tuple[set[int], str | None]:
    """Write ``requests`` in one transaction, retrying passing failures; never raises.

    ``after(refused)`` runs inside that transaction, once the requests are written.
    Returns the indexes of refused claims and None, or an empty set and what went wrong.
    """
    outcome = commit_until(storage, requests, after, deadline=time.monotonic() + fatal_timeout)
    return outcome.refused, outcome.error


def commit_until(
    storage: Storage,
    requests: Sequence[ChangeSet],
    after: Callable[[set[int]], Any] | None = None,
    *,
    deadline: float,
    notice: Notice | None = None,
    landed: Callable[[], set[int] | None] | None = None,
) -> Outcome:
    """`commit`, retrying passing failures until ``deadline`` (a `time.monotonic` time).

    ``notice`` hears of the retries, about once a second. ``landed()``, asked before each
    retry, returns the refused claims if the failed attempt committed after all (its
    connection was lost during the ``COMMIT``), else None.
    """
    backoff = _Backoff(deadline, notice)
    while True:
        try:
            if backoff.failures and landed is not None:
                refused = landed()
                if refused is not None:
                    return Outcome(refused, retried=True)
            refused = write_requests(storage, requests, after)
            return Outcome(refused, retried=backoff.failures > 0)
        except Exception as exc:
            cause = _describe(exc)
            if not _passing(exc):
                return Outcome(set(), cause)
            if not backoff.wait(cause):
                return Outcome(set(), backoff.gave_up(cause), fatal=True)


def failure(error: str | None, fatal: bool) -> PersistenceError | None:
    """Return the exception a batch's ``done`` gets for ``error`` (None: committed)."""
    if error is None:
        return None
    return FatalPersistenceError(error) if fatal else PersistenceError(error)


def log() -> Any:
    """Return the writer's logger."""
    # Imported here, not with this module: the writer process imports the storage layer only.
    from pydynflow.logging import get_logger

    return get_logger(component="writer")


def log_retry(failures: int, seconds: float, cause: str) -> None:
    """Warn that a transaction is being retried (a `Notice`)."""
    log().warning(
        "the database cannot be written; retrying the transaction",
        attempts=failures,
        seconds=round(seconds, 1),
        cause=cause,
    )


class _Backoff:
    """The pauses between attempts of a transaction failing for a passing reason."""

    def __init__(self, deadline: float, notice: Notice | None = None) -> None:
        self.deadline = deadline
        self.notice = notice
        self.started = time.monotonic()
        self.failures = 0
        self.pause = FIRST_PAUSE
        self.noticed = -NOTICE_INTERVAL  # when `notice` was last called

    def wait(self, cause: str) -> bool:
        """Take in a failed attempt: pause before the next one, or return False once the
        deadline has passed."""
        self.failures += 1
        now = time.monotonic()
        if now >= self.deadline:
            return False
        if self.notice is not None and now - self.noticed >= NOTICE_INTERVAL:
            self.noticed = now
            self.notice(self.failures, now - self.started, cause)
        time.sleep(min(self.pause, self.deadline - now))  # the last attempt at the deadline
        self.pause = min(self.pause * 2, MAX_PAUSE)
        return True

    def gave_up(self, cause: str) -> str:
        """Return the message of the `FatalPersistenceError` that ends the retries."""
        seconds = time.monotonic() - self.started
        return (
            f"the database could not be written for {seconds:.1f} s ({self.failures} attempts, "
            f"failing for a passing reason each time); giving up. The last failure: {cause}"
        )


def _passing(exc: BaseException) -> bool:
    """Return whether ``exc`` comes from a failure worth retrying (the driver's
    ``OperationalError`` and its kinds: locked, busy, disk full, connection lost,
    serialization failure, server shutting down)."""
    cause: BaseException | None = exc
    while cause is not None:
        if any(kind.__name__ == "OperationalError" for kind in type(cause).__mro__):
            return True
        cause = cause.__cause__
    return False


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PersistenceError) else f"{type(exc).__name__}: {exc}"
