"""A wait's timeout that fires while an event is already on its way to that wait ends
nothing: the event ends the wait, and the step's next wait runs its own course.

The window is the step's move back to ``running`` for the event (its commit): the test holds
the step's row locked, as a slow commit would, fires the first wait's timer on a
`ManagedClock` meanwhile, and only then lets the commit through.
"""

from __future__ import annotations

import threading

import pytest

from pydynflow import Action, PlanState, Result, World
from pydynflow.testing import ManagedClock
from tests.support.postgres import TIMEOUT, connect, eventually, lock_waiters

pytestmark = pytest.mark.postgres

FIRST_WAIT = 60.0


class WaitsTwice(Action):
    """Two waits with timeouts of the world's clock; a timeout is recorded, not raised."""

    async def run(self) -> None:
        self.output["first"] = await self.wait_for_event(timeout=FIRST_WAIT)
        try:
            self.output["second"] = await self.wait_for_event(timeout=3600)
        except TimeoutError:
            self.output["second"] = "timed out"


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
        locker = connect(postgres_url)
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
            eventually(lambda: lock_waiters(locker), "the event's commit to wait")
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
