"""A wait's timeout that fires while an event is already on its way to that wait ends
nothing: the event ends the wait, and the step's next wait runs its own course.

The window is the step's move back to ``running`` for the event (its commit): the test holds
the step's row locked, as a slow commit would, fires the first wait's timer on a
`ManagedClock` meanwhile, and only then lets the commit through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from pydynflow import Action, PlanState, Result, World
from pydynflow.testing import ManagedClock

pytestmark = pytest.mark.postgres

TIMEOUT = 30.0
FIRST_WAIT = 60.0


class WaitsTwice(Action):
    """Two waits with timeouts of the world's clock; a timeout is recorded, not raised."""

    async def run(self) -> None:
        self.output["first"] = await self.wait_for_event(timeout=FIRST_WAIT)
        try:
            self.output["second"] = await self.wait_for_event(timeout=3600)
        except TimeoutError:
            self.output["second"] = "timed out"


def eventually(condition: Callable[[], object], what: str) -> None:
    """Wait until ``condition()`` holds (another thread or the database changes it)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # progress of other threads, seen through the database (noqa: sleep-ok)


def _connect(postgres_url: str) -> Any:
    """A connection to the test's schema, in a transaction of its own."""
    dsn, _, options = postgres_url.partition("?")
    conn = psycopg2.connect(dsn, options=options.split("=", 1)[1].replace("%3D", "="))
    conn.autocommit = False
    return conn


def _lock_waiters(conn: Any) -> int:
    """How many other backends of this database wait for a lock."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_a_timeout_fired_while_the_event_is_committed_does_not_end_the_next_wait(
    postgres_url: str,
) -> None:
    clock = ManagedClock()
    with World(postgres_url, clock=clock) as world:
        triggered = world.trigger(WaitsTwice)
        step_id = 2
        eventually(
            lambda: world.storage.step_state(triggered.id, step_id) == "suspended",
            "the first wait",
        )
        locker = _connect(postgres_url)
        try:
            with locker.cursor() as cursor:
                cursor.execute(
                    "SELECT 1 FROM dynflow_steps WHERE execution_plan_uuid = %s AND id = %s "
                    "FOR UPDATE",
                    (triggered.id, step_id),
                )
            answers: list[bool] = []
            sender = threading.Thread(
                target=lambda: answers.append(world.event(triggered.id, step_id, "one"))
            )
            sender.start()
            # the step took the event: its move to running waits for the row
            eventually(lambda: _lock_waiters(locker), "the event's commit to wait")
            assert clock.advance(FIRST_WAIT) >= 1  # the first wait's timer fires now
        finally:
            locker.commit()
            locker.close()
        sender.join(TIMEOUT)
        assert answers == [True]
        eventually(
            lambda: world.load(triggered.id).actions[1].output.get("first") == "one",
            "the second wait",
        )
        assert world.event(triggered.id, step_id, "two", optional=True) is True
        finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert finished.actions[1].output == {"first": "one", "second": "two"}
