"""An ``async def run`` is wrapped by awaiting: its hooks' code after ``call_next`` runs
once the run is over, however long it waited for events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, PlanState, Result, World
from pydynflow.middleware import Middleware
from pydynflow.testing import InThreadWorld
from tests.support.middleware_example import calls, log

TIMEOUT = 30


class AsyncAround(Middleware):
    async def run(self, call_next: Any, event: Any) -> Any:
        log("before")
        try:
            return await call_next(event)
        finally:
            log(f"after, output {self.action.output}")


class PassThrough(Middleware):
    """A plain ``def run`` that only looks at the call: it returns what ``call_next`` gave."""

    def run(self, call_next: Any, event: Any) -> Any:
        log("pass")
        return call_next(event)


class WaitsForApproval(Action):
    middleware = [AsyncAround, PassThrough]

    async def run(self) -> None:
        log("run")
        decision = await self.wait_for_event()
        self.output["decision"] = decision


class Sleeps(Action):
    middleware = [AsyncAround, PassThrough]

    async def run(self) -> None:
        log("run")
        await asyncio.sleep(0)
        self.output["slept"] = True


class SyncRun(Action):
    middleware = [AsyncAround]

    def run(self) -> None:
        log("sync run")


@pytest.fixture(params=["World", "InThreadWorld"])
def world(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Any]:
    calls.clear()
    if request.param == "World":
        started: Any = World(sqlite_url, auto_execute=False).start()
    else:
        started = InThreadWorld()
    yield started
    started.stop()


def test_the_hooks_wrap_the_whole_async_run(world: Any) -> None:
    plan = world.trigger(Sleeps).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert calls == ["before", "pass", "run", "after, output {'slept': True}"]


def test_and_its_waits_for_events(sqlite_url: str) -> None:
    calls.clear()
    with World(sqlite_url, auto_execute=False) as world:
        triggered = world.trigger(WaitsForApproval)
        world.event(triggered.id, 2, "approved")  # kept until the run waits, if it runs still
        plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert calls == ["before", "pass", "run", "after, output {'decision': 'approved'}"]


def test_an_async_hook_around_a_sync_run_fails_the_step(world: Any) -> None:
    plan = world.trigger(SyncRun).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert "AsyncAround.run is async def: it wraps only async runs" in plan.steps[2].error.message
    assert calls == []
