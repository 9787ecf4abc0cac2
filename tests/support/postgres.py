"""PostgreSQL helpers for tests that hold rows locked from a connection of their own.

Such a test takes a lock the engine's next write needs, waits until a backend waits for it
(`lock_waiters`), does what must happen inside that window, and commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2

TIMEOUT = 30.0


def connect(postgres_url: str) -> Any:
    """A psycopg2 connection to the test's schema (the ``postgres_url`` fixture's
    ``search_path`` option), in a transaction of its own."""
    dsn, _, options = postgres_url.partition("?")
    conn = psycopg2.connect(dsn, options=options.split("=", 1)[1].replace("%3D", "="))
    conn.autocommit = False
    return conn


def lock_waiters(conn: Any) -> int:
    """How many other backends of this database wait for a lock now."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def eventually(condition: Callable[[], object], what: str) -> None:
    """Wait until ``condition()`` holds (other threads change what it reads)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # progress of other threads, seen through the database (noqa: sleep-ok)
