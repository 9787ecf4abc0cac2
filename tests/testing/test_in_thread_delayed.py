"""`InThreadWorld.delay` and `InThreadWorld.chain`: delayed and chained plans stored as a
`World` stores them, planned and run in the calling thread when the world's `ManagedClock`
says they are due, or once the plans they are chained after have stopped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from pydynflow import PlanState, Result, UnknownPlan
from pydynflow.clock import wall_time
from pydynflow.testing import InThreadWorld
from tests.support.delayed_actions import Dummy, FailingDummy


@pytest.fixture
def world(sqlite_url: str) -> Iterator[InThreadWorld]:
    with InThreadWorld(sqlite_url) as started:
        yield started


def test_a_plan_delayed_without_a_start_runs_at_once(world: InThreadWorld) -> None:
    delayed = world.delay(Dummy, None, {"x": 1})
    assert delayed.state == PlanState.SCHEDULED  # as stored by delay
    plan = world.load(delayed.id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.actions[1].output == {"x": 1}
    assert world.storage.delayed_plan(delayed.id) is None  # its record went with its start


def test_a_plan_delayed_to_later_runs_when_the_clock_gets_there(world: InThreadWorld) -> None:
    start_at = wall_time(world.clock) + timedelta(seconds=60)
    delayed = world.delay(Dummy, {"start_at": start_at}, {"x": 2})
    world.clock.advance(59)
    assert world.load(delayed.id).state == PlanState.SCHEDULED
    world.clock.advance(1)
    plan = world.load(delayed.id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert [entry.name for entry in plan.history][:1] == ["delay"]


def test_a_plan_not_started_before_its_deadline_is_stopped_with_an_error(
    world: InThreadWorld,
) -> None:
    now = wall_time(world.clock)
    delayed = world.delay(
        Dummy, {"start_before": now + timedelta(seconds=10), "frozen": True}, {"x": 3}
    )
    world.clock.advance(20)
    assert world.client.set_delayed_frozen(delayed.id, False)
    world.run_due()
    plan = world.load(delayed.id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.ERROR)
    assert "could not be started before set time" in str(plan.error)


def test_a_chained_plan_runs_once_its_prerequisites_have_stopped(world: InThreadWorld) -> None:
    start_at = wall_time(world.clock) + timedelta(seconds=30)
    first = world.delay(Dummy, {"start_at": start_at}, {"x": "first"})
    done = world.trigger(Dummy, {"x": "done"}).wait()
    chained = world.chain([first.id, done.id], Dummy, {"x": "chained"})
    assert world.load(chained.id).state == PlanState.SCHEDULED  # `first` has not run yet
    world.clock.advance(30)
    assert world.load(first.id).state == PlanState.STOPPED
    plan = world.load(chained.id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.actions[1].output == {"x": "chained"}


def test_a_plan_chained_after_a_failed_one_stops_with_an_error(world: InThreadWorld) -> None:
    failed = world.trigger(FailingDummy, {}).wait()
    assert failed.result == Result.ERROR
    chained = world.chain(failed.id, Dummy, {"x": 4})
    plan = world.load(chained.id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.ERROR)
    assert "prerequisite execution plans failed" in str(plan.error)


def test_chain_after_an_unknown_plan_is_refused(world: InThreadWorld) -> None:
    with pytest.raises(UnknownPlan):
        world.chain("no-such-plan", Dummy, {})
