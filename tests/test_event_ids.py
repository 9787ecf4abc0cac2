"""Events whose sender chose their id (``event_id``) are applied once; events for a plan
that runs nowhere yet are kept for it.

A web hook delivered twice, or a message consumer that redelivers after a crash, sends the
same event twice; with the delivery id as ``event_id`` the step gets it once. Held against
`World` (SQLite file and PostgreSQL; a restart between the two deliveries too) and
`InThreadWorld`, and through a client world in the CLI tests (``--event-id``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pydynflow import Action, EventRejected, World
from pydynflow.testing import InThreadWorld

TIMEOUT = 30


class CountsEvents(Action):
    """Suspends until it got two events; counts every event it is run with."""

    def run(self, event: Any = None) -> None:
        if event is not None:
            self.output.setdefault("events", []).append(event)
        if len(self.output.get("events", [])) < 2:
            self.suspend()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


def _suspended(world: Any, plan_id: str) -> None:
    """Wait until the plan's step is suspended (the world's threads get it there)."""
    deadline = time.monotonic() + TIMEOUT
    while world.load(plan_id).steps[2].state != "suspended":
        assert time.monotonic() < deadline, "the step did not suspend"
        time.sleep(0.01)  # another thread's progress, seen through storage (noqa: sleep-ok)


def test_the_same_event_id_twice_is_applied_once(url: str) -> None:
    with World(url) as world:
        triggered = world.trigger(CountsEvents)
        _suspended(world, triggered.id)
        assert world.event(triggered.id, 2, "first", event_id="delivery-1") is True
        _suspended(world, triggered.id)
        assert world.event(triggered.id, 2, "first again", event_id="delivery-1") is True
        assert world.event(triggered.id, 2, "second", event_id="delivery-2") is True
        plan = triggered.wait(TIMEOUT)
        assert plan.steps[2].output["events"] == ["first", "second"]
        # The step has ended: a known id still returns normally, an unknown one is refused.
        assert world.event(triggered.id, 2, "late", event_id="delivery-2") is True
        with pytest.raises(EventRejected):
            world.event(triggered.id, 2, "late", event_id="delivery-3")


def test_an_event_id_is_remembered_across_a_restart(url: str) -> None:
    with World(url) as world:
        triggered = world.trigger(CountsEvents)
        _suspended(world, triggered.id)
        world.event(triggered.id, 2, "first", event_id="delivery-1")
        _suspended(world, triggered.id)
    with World(url) as world:  # continues the plan the stop paused
        _suspended(world, triggered.id)
        assert world.event(triggered.id, 2, "first again", event_id="delivery-1") is True
        assert world.event(triggered.id, 2, "second", event_id="delivery-2") is True
        (continued,) = [t for t in world.auto_executed if t.id == triggered.id]
        plan = continued.wait(TIMEOUT)
        assert plan.steps[2].output["events"] == ["first", "second"]


def test_the_in_thread_world_applies_an_event_id_once() -> None:
    with InThreadWorld() as world:
        triggered = world.trigger(CountsEvents)
        assert world.event(triggered.id, 2, "first", event_id="d-1") is True
        assert world.event(triggered.id, 2, "first again", event_id="d-1") is True
        assert world.event(triggered.id, 2, "second", event_id="d-2") is True
        plan = triggered.wait()
        assert plan.steps[2].output["events"] == ["first", "second"]
        assert world.event(triggered.id, 2, "late", event_id="d-2") is True


def test_an_event_for_a_plan_that_runs_nowhere_is_kept_for_its_execution(url: str) -> None:
    """An event for a step of a planned (or paused) plan is stored, not rejected, and the
    step gets it when the plan runs; a finished step still rejects."""
    with World(url, auto_execute=False) as world:
        plan = world.plan(CountsEvents)
        assert world.event(plan.id, 2, "early", event_id="delivery-1") is True
        assert world.event(plan.id, 2, "early again", event_id="delivery-1") is True
        assert world.event(plan.id, 2, "second") is True
        done = world.execute(plan.id).wait(TIMEOUT)
        assert done.steps[2].output["events"] == ["early", "second"]
        with pytest.raises(EventRejected):
            world.event(plan.id, 2, "late")
