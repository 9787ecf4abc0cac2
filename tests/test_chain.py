"""CHAIN-* scenarios: `World.chain` plans run once all their prerequisites have stopped.

The ready-plans query (`Storage.ready_delayed_plans`) shows what the delayed executor would
take; the poll (on a `ManagedClock`) then plans it, or fails it when a prerequisite ended
in error. Every test runs on a SQLite file, SQLite in memory and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pydynflow import ExecutionPlan, PlanState, Result, StepState, UnknownPlan, World
from pydynflow.testing import ManagedClock
from tests.support.delayed_actions import Dummy, FailingDummy

TIMEOUT = 30


@pytest.fixture
def clock() -> ManagedClock:
    return ManagedClock()


@pytest.fixture
def world(db_url: str, clock: ManagedClock) -> Iterator[World]:
    with World(db_url, clock=clock, auto_execute=False) as started:
        yield started


def ready(world: World, *among: ExecutionPlan) -> list[str]:
    """Return which of ``among`` the delayed executor would take now."""
    wanted = {plan.id for plan in among}
    due = world.storage.ready_delayed_plans(world.clock.utcnow())  # type: ignore[union-attr]
    return [one.plan_id for one in due if one.plan_id in wanted]


def poll(world: World, clock: ManagedClock) -> None:
    """Move to the delayed executor's next poll and wait for it."""
    clock.advance(world.delayed_poll_interval)
    assert world._delayed is not None and world._delayed.wait_for_poll(TIMEOUT)


def ended(world: World, plan_id: str) -> ExecutionPlan:
    deadline = time.monotonic() + TIMEOUT
    while (plan := world.load(plan_id)).state != PlanState.STOPPED:
        if time.monotonic() > deadline:
            raise AssertionError(f"plan {plan_id} is still {plan.state}")
        time.sleep(0.01)  # the executor's progress, seen through storage (noqa: sleep-ok)
    return plan


def test_chain01_a_plan_chained_onto_one_plan(world: World, clock: ManagedClock) -> None:
    plan1 = world.plan(Dummy, {"x": 1})
    plan2 = world.chain(plan1.id, Dummy, {"x": 2})
    assert plan2.state == PlanState.SCHEDULED
    assert [entry.name for entry in plan2.history] == ["delay"]
    assert world.load(plan2.id).delayed_plan().blocked_by == (plan1.id,)  # type: ignore[union-attr]
    assert world.storage.blocked_plans(plan1.id) == [plan2.id]
    poll(world, clock)
    assert ready(world, plan2) == [] and world.load(plan2.id).state == PlanState.SCHEDULED
    assert world.execute(plan1.id).wait(TIMEOUT).state == PlanState.STOPPED
    assert ready(world, plan2) == [plan2.id]
    poll(world, clock)
    done = ended(world, plan2.id)
    assert (done.result, done.steps[2].output) == (Result.SUCCESS, {"x": 2})


def test_chain02_a_chain_waits_for_all_its_prerequisites(world: World, clock: ManagedClock) -> None:
    plan1, plan2 = world.plan(Dummy), world.plan(Dummy)
    plan3 = world.chain([plan2.id, plan1.id], Dummy)
    world.execute(plan1.id).wait(TIMEOUT)
    assert ready(world, plan3) == []
    poll(world, clock)
    assert world.load(plan3.id).state == PlanState.SCHEDULED
    world.execute(plan2.id).wait(TIMEOUT)
    assert ready(world, plan3) == [plan3.id]
    poll(world, clock)
    assert ended(world, plan3.id).result == Result.SUCCESS


def test_chain03_a_failed_prerequisite_fails_the_chained_plan(
    world: World, clock: ManagedClock
) -> None:
    plan1 = world.plan(FailingDummy)
    plan2 = world.chain(plan1.id, Dummy)
    failed = world.execute(plan1.id).wait(TIMEOUT)
    assert (failed.state, failed.result) == (PlanState.STOPPED, Result.ERROR)
    assert ready(world, plan2) == [plan2.id]
    poll(world, clock)
    chained = ended(world, plan2.id)
    assert (chained.state, chained.result) == (PlanState.STOPPED, Result.ERROR)
    assert chained.error is not None
    assert "prerequisite execution plans failed" in chained.error.message
    assert f"- {plan1.id}" in chained.error.message
    assert chained.steps[1].state == StepState.ERROR and list(chained.steps) == [1]
    assert [entry.name for entry in chained.history] == ["delay", "failed-dependency"]
    assert chained.delayed_plan() is None


def test_chain04_one_of_several_prerequisites_fails(world: World, clock: ManagedClock) -> None:
    plan1, plan2 = world.plan(Dummy), world.plan(FailingDummy)
    plan3 = world.chain([plan1.id, plan2.id], Dummy)
    world.execute(plan1.id).wait(TIMEOUT)
    assert ready(world, plan3) == []
    world.execute(plan2.id).wait(TIMEOUT)
    assert ready(world, plan3) == [plan3.id]
    poll(world, clock)
    chained = ended(world, plan3.id)
    assert chained.result == Result.ERROR and chained.error is not None
    assert plan2.id in chained.error.message and plan1.id not in chained.error.message


def test_a_halted_prerequisite_does_not_block(world: World, clock: ManagedClock) -> None:
    plan1 = world.plan(Dummy)
    plan2 = world.chain(plan1.id, Dummy)
    world.halt(plan1.id)
    halted = world.load(plan1.id)
    assert (halted.state, halted.result) == (PlanState.STOPPED, Result.PENDING)
    poll(world, clock)
    assert ended(world, plan2.id).result == Result.SUCCESS


def test_a_chain_onto_stopped_plans_runs_at_once(world: World) -> None:
    done = world.trigger(Dummy).wait(TIMEOUT)
    chained = world.chain([done.id], Dummy, {"x": 9})  # this world's delayed executor looks
    assert world._delayed is not None and world._delayed.wait_for_poll(TIMEOUT)
    assert ended(world, chained.id).steps[2].output == {"x": 9}


def test_a_chain_onto_a_delayed_plan(world: World, clock: ManagedClock) -> None:
    first = world.delay(Dummy, {"start_at": clock.utcnow()})
    then = world.chain(first.id, Dummy)
    poll(world, clock)
    assert ended(world, first.id).result == Result.SUCCESS
    poll(world, clock)
    assert ended(world, then.id).result == Result.SUCCESS


def test_chaining_onto_unknown_plans_is_refused(world: World) -> None:
    with pytest.raises(UnknownPlan):
        world.chain(["no-such-plan"], Dummy)
    with pytest.raises(ValueError, match="ids of the plans"):
        world.chain([], Dummy)
    assert world.plans() == []


def test_cancelling_a_chained_plan(world: World, clock: ManagedClock) -> None:
    plan1 = world.plan(Dummy)
    plan2 = world.chain(plan1.id, Dummy)
    assert world.cancel(plan2.id) == 1
    world.execute(plan1.id).wait(TIMEOUT)
    poll(world, clock)
    cancelled = world.load(plan2.id)
    assert (cancelled.state, cancelled.result) == (PlanState.STOPPED, Result.CANCELLED)
    assert world.storage.blocked_plans(plan1.id) == [plan2.id]  # still said, for readers
