"""Dynflow's middleware scenarios (MW-01..MW-09), held against `World` and `InThreadWorld`.

The delay parts of MW-01 and MW-09 delay plans (`World.delay`): `World` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pydynflow import PlanState, Result, World
from pydynflow.middleware import Middleware, Transaction
from pydynflow.testing import (
    InThreadWorld,
    create_and_plan_action,
    finalize_action,
    run_action,
)
from tests.support import middleware_example as ex

TIMEOUT = 30

Opener = Callable[..., Any]


@pytest.fixture(params=["World", "InThreadWorld"])
def open_world(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Opener]:
    """Yield an opener of worlds of one kind (``middleware=`` passed on); all are stopped."""
    opened: list[Any] = []

    def open_(**kwargs: Any) -> Any:
        if request.param == "World":
            world: Any = World(sqlite_url, auto_execute=False, **kwargs).start()
        else:
            world = InThreadWorld(**kwargs)
        opened.append(world)
        return world

    ex.calls.clear()
    yield open_
    for world in opened:
        world.stop()


def run(world: Any, action_class: type, *args: Any) -> Any:
    plan = world.trigger(action_class, *args).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan.error
    return plan


def test_mw01_wraps_every_phase_in_order(open_world: Opener) -> None:
    world = open_world()
    run(world, ex.LoggingAction, {})
    assert ex.calls == [
        "LogMiddleware::before_plan_phase",
        "LogMiddleware::before_plan",
        "plan",
        "LogMiddleware::after_plan",
        "LogMiddleware::after_plan_phase",
        "LogMiddleware::before_run",
        "run",
        "LogMiddleware::after_run",
        "LogMiddleware::before_finalize_phase",
        "LogMiddleware::before_finalize",
        "finalize",
        "LogMiddleware::after_finalize",
        "LogMiddleware::after_finalize_phase",
    ]


def test_mw02_a_subclass_extends_its_bases_middleware(open_world: Opener) -> None:
    run(open_world(), ex.SubAction, {})
    assert ex.calls == [
        "LogRunMiddleware::before_run",
        "AnotherLogRunMiddleware::before_run",
        "run",
        "AnotherLogRunMiddleware::after_run",
        "LogRunMiddleware::after_run",
    ]


OUTSIDE = [
    "AnotherLogRunMiddleware::before_run",
    "LogRunMiddleware::before_run",
    "run",
    "LogRunMiddleware::after_run",
    "AnotherLogRunMiddleware::after_run",
]


@pytest.mark.parametrize("how", ["argument", "use"])
def test_mw03_world_middleware_is_outermost(open_world: Opener, how: str) -> None:
    if how == "argument":
        world = open_world(middleware=[ex.AnotherLogRunMiddleware])
    else:
        world = open_world()
        world.middleware.use(ex.AnotherLogRunMiddleware)
    run(world, ex.LoggedRun, {})
    assert ex.calls == OUTSIDE


def test_mw04_before_rule(open_world: Opener) -> None:
    run(open_world(), ex.SubActionBeforeRule, {})
    assert ex.calls == OUTSIDE


def test_mw05_after_rule_moves_world_middleware_inside(open_world: Opener) -> None:
    world = open_world()
    world.middleware.use(ex.AnotherLogRunMiddleware, after=ex.LogRunMiddleware)
    run(world, ex.LoggedRun, {})
    assert ex.calls == [
        "LogRunMiddleware::before_run",
        "AnotherLogRunMiddleware::before_run",
        "run",
        "AnotherLogRunMiddleware::after_run",
        "LogRunMiddleware::after_run",
    ]


def test_mw06_replace_rule(open_world: Opener) -> None:
    run(open_world(), ex.SubActionReplaceRule, {})
    assert ex.calls == [
        "AnotherLogRunMiddleware::before_run",
        "run",
        "AnotherLogRunMiddleware::after_run",
    ]


def test_mw07_do_not_use(open_world: Opener) -> None:
    run(open_world(), ex.SubActionDoNotUseRule, {})
    assert ex.calls == ["run"]


def test_mw08_a_hook_reads_the_running_action(open_world: Opener) -> None:
    world = open_world()
    world.middleware.use(ex.ObservingMiddleware, replace=ex.LogRunMiddleware)
    run(world, ex.LoggedRun, {"message": "hello"})
    assert ex.calls == ["input#message:hello", "run", "output#message:finished"]


def delayed_run(world: World, action_class: type, *args: Any) -> Any:
    """Delay a plan due a minute ago; let the world's delayed executor plan and run it."""
    start_at = datetime.now(UTC) - timedelta(seconds=60)
    delayed = world.delay(action_class, {"start_at": start_at}, *args)
    assert delayed.state == PlanState.SCHEDULED
    assert world._delayed is not None and world._delayed.wait_for_poll(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while (plan := world.load(delayed.id)).state != PlanState.STOPPED:
        assert time.monotonic() < deadline, f"plan {plan.id} is still {plan.state}"
        time.sleep(0.01)  # the executor's progress, seen through storage (noqa: sleep-ok)
    assert plan.result == Result.SUCCESS, plan.error
    return plan


def test_mw01_delayed_wraps_every_call_in_order(sqlite_url: str) -> None:
    ex.calls.clear()
    with World(sqlite_url, auto_execute=False) as world:
        delayed_run(world, ex.LoggingAction, {})
    assert ex.calls == [
        "LogMiddleware::before_delay",
        "delay",
        "LogMiddleware::after_delay",
        "LogMiddleware::before_plan_phase",
        "LogMiddleware::before_plan",
        "plan",
        "LogMiddleware::after_plan",
        "LogMiddleware::after_plan_phase",
        "LogMiddleware::before_run",
        "run",
        "LogMiddleware::after_run",
        "LogMiddleware::before_finalize_phase",
        "LogMiddleware::before_finalize",
        "finalize",
        "LogMiddleware::after_finalize",
        "LogMiddleware::after_finalize_phase",
    ]


def test_mw09_delay_middleware_sets_the_input_that_planning_and_running_see(
    sqlite_url: str,
) -> None:
    ex.calls.clear()
    with World(sqlite_url, auto_execute=False) as world:
        world.middleware.use(ex.AnotherObservingMiddleware, replace=ex.LogRunMiddleware)
        plan = delayed_run(world, ex.LoggedRun, {})
        hooks = ["delay#set-input", "plan#input", "input#message"]
        expected = [*(f"{hook}:{world.id}" for hook in hooks), "run", "output#message:finished"]
    assert ex.calls == expected
    assert plan.actions[1].input == {"message": world.id}


class SkipsTheRest(Middleware):
    def run(self, call_next: Any, event: Any) -> None:
        ex.log("skipped")


def test_a_hook_that_does_not_call_next_skips_the_inner_layers(open_world: Opener) -> None:
    run(open_world(middleware=[SkipsTheRest]), ex.LoggedRun, {})
    assert ex.calls == ["skipped"]


class Fails(Middleware):
    def run(self, call_next: Any, event: Any) -> None:
        raise RuntimeError("refused by middleware")


def test_a_hook_that_raises_fails_the_step(open_world: Opener) -> None:
    plan = open_world(middleware=[Fails]).trigger(ex.LoggedRun, {}).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert plan.steps[2].error.message == "refused by middleware"
    assert ex.calls == []


class FailsPlanning(Middleware):
    def plan(self, call_next: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no planning today")


def test_a_plan_hook_that_raises_fails_planning(open_world: Opener) -> None:
    triggered = open_world(middleware=[FailsPlanning]).trigger(ex.LoggedRun, {})
    assert not triggered.planned
    assert triggered.error.message == "no planning today"


def test_a_world_resolves_each_class_once_outermost_first() -> None:
    world = World("sqlite:///:memory:", executor=False, middleware=[ex.ObservingMiddleware])
    try:
        assert world.middleware.resolve(ex.SubAction) == (
            Transaction,
            ex.ObservingMiddleware,
            ex.LogRunMiddleware,
            ex.AnotherLogRunMiddleware,
        )
        assert world.middleware.stack(ex.SubAction) is world.middleware.stack(ex.SubAction)
        world.middleware.use(ex.LogMiddleware)  # a change starts over
        assert world.middleware.resolve(ex.SubAction)[2] is ex.LogMiddleware
    finally:
        world.stop()


def test_the_testing_helpers_run_the_actions_own_middleware() -> None:
    ex.calls.clear()
    finalize_action(run_action(create_and_plan_action(ex.LoggingAction, {})))
    assert ex.calls == [
        "LogMiddleware::before_plan",
        "plan",
        "LogMiddleware::after_plan",
        "LogMiddleware::before_run",
        "run",
        "LogMiddleware::after_run",
        "LogMiddleware::before_finalize",
        "finalize",
        "LogMiddleware::after_finalize",
    ]


class WaitsForGo(ex.LoggedRun):
    def run(self, event: Any = None) -> None:
        ex.log(f"run {event}")
        if event is None:
            self.suspend()


def test_each_call_of_a_suspended_run_goes_through_the_hooks(open_world: Opener) -> None:
    world = open_world()
    triggered = world.trigger(WaitsForGo, {})
    world.event(triggered.id, 2, "go")  # kept until the step is suspended, if it runs still
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    around = ["LogRunMiddleware::before_run", "LogRunMiddleware::after_run"]
    assert ex.calls == [around[0], "run None", around[1], around[0], "run go", around[1]]
