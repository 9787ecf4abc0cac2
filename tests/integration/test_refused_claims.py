"""A world whose claim on a stored plan is refused writes nothing of that plan.

Two executor worlds may both start continuing one paused plan (one recovers it, the other
finds it paused when a world leaves): the conditional claim (``paused`` -> ``running``) lets
one win. The loser must not write anything else of the plan: a `Retry` backoff that runs
out while its claim is in flight must not move the failed step to ``running`` over what the
winner stores (a plan the winner finished would read ``stopped`` with result ``pending``).

The test holds the plan's row locked in a transaction of its own, as the winning world
would, until the loser's claim waits for it and the loser's retry timer has fired.
"""

from __future__ import annotations

import threading

import pytest

from pydynflow import Action, Retry, StepState, World
from pydynflow.testing import ManagedClock
from tests.support.postgres import connect, eventually, lock_waiters

pytestmark = pytest.mark.postgres

BACKOFF = 60.0


class FailsOnce(Action):
    """Fails its first run; `Retry` runs it again after a backoff of the world's clock."""

    rescue = Retry(1, backoff=BACKOFF)
    runs = 0
    lock = threading.Lock()

    def run(self) -> None:
        with FailsOnce.lock:
            FailsOnce.runs += 1
            first = FailsOnce.runs == 1
        if first:
            raise RuntimeError("first run fails")


def _paused_with_a_retry_due(postgres_url: str) -> tuple[str, int]:
    """A plan whose step failed once, stopped while its `Retry` backoff ran: stored paused
    ("stop"), handed over to the next executor. Returns (plan id, step id)."""
    FailsOnce.runs = 0
    clock = ManagedClock()
    world = World(postgres_url, clock=clock, auto_rescue=False).start()
    try:
        triggered = world.trigger(FailsOnce)
        step_id = 2
        eventually(
            lambda: world.storage.step_state(triggered.id, step_id) == "error" and clock.pending(),
            "the first run to fail and its retry to be armed",
        )
    finally:
        world.stop()
    return triggered.id, step_id


def test_a_world_that_loses_the_claim_writes_nothing_of_the_plan(postgres_url: str) -> None:
    plan_id, step_id = _paused_with_a_retry_due(postgres_url)
    winner = connect(postgres_url)
    try:
        with winner.cursor() as cursor:
            cursor.execute("SELECT state FROM dynflow_execution_plans WHERE uuid = %s", (plan_id,))
            assert cursor.fetchone()[0] == "paused"
            # another world's claim, not committed yet: the row stays locked
            cursor.execute(
                "UPDATE dynflow_execution_plans SET state = 'running' WHERE uuid = %s", (plan_id,)
            )
        clock = ManagedClock()
        loser = World(postgres_url, clock=clock, auto_rescue=False).start()
        try:
            # it takes the handed-over plan: its claim waits for the row, its retry is armed
            eventually(lambda: lock_waiters(winner) and clock.pending(), "the loser's claim")
            assert clock.advance(BACKOFF) >= 1  # the backoff runs out before the claim's answer
            winner.commit()
        finally:
            loser.stop()  # every commit it sent is written by then
        with winner.cursor() as cursor:
            cursor.execute(
                "SELECT state, attempts FROM dynflow_steps "
                "WHERE execution_plan_uuid = %s AND id = %s",
                (plan_id, step_id),
            )
            state, attempts = cursor.fetchone()
        winner.commit()
    finally:
        winner.close()
    assert (state, attempts) == (StepState.ERROR.value, 1)
    assert FailsOnce.runs == 1
