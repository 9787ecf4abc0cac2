"""`Singleton`: at most one active plan of a class per database (Dynflow's SING-* scenarios).

The lock is a coordinator record taken in planning, checked before a run step runs and let go
of in the transaction that stops the plan or pauses it for a person. The scenarios run on a
started `World` and on `InThreadWorld` (one execution core), on a SQLite file and on
PostgreSQL; what needs threads, a stop and a restart runs on `World` only.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import (
    Action,
    ExecutionPlan,
    PlanningError,
    PlanState,
    Result,
    Singleton,
    StepState,
    World,
)
from pydynflow.registry import class_name
from pydynflow.storage import Storage
from pydynflow.storage.singleton_lock import LOCK_CLASS, ORPHANED_AFTER
from pydynflow.testing import InThreadWorld, create_and_plan_action

TIMEOUT = 30


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """Return a fresh database URL: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture(params=["World", "InThreadWorld"])
def world(request: pytest.FixtureRequest, url: str) -> Iterator[Any]:
    """Yield a started `World`, or an `InThreadWorld`, on ``url``."""
    if request.param == "World":
        started = World(url).start()
        yield started
        started.stop(TIMEOUT)
    else:
        in_thread = InThreadWorld(url)
        yield in_thread
        in_thread.stop()


def holder(storage: Storage, action_class: type[Action]) -> str | None:
    """Return the plan holding the singleton lock of ``action_class`` (None: no lock)."""
    return storage.record_owner(LOCK_CLASS, class_name(action_class))


def outcome(plan: ExecutionPlan) -> tuple[PlanState, Result]:
    return plan.state, plan.result


# -- actions ---------------------------------------------------------------------------------


class NoPhases(Singleton):
    """Neither run nor finalize: only a plan step."""


class FinalizeOnly(Singleton):
    finalize_calls = 0

    def finalize(self) -> None:
        FinalizeOnly.finalize_calls += 1


class WithRun(Singleton):
    def run(self) -> None:
        if self.input.get("fail"):
            raise RuntimeError("failing on purpose")
        self.output["ran"] = True


class SuspendsOnce(Singleton):
    suspending = threading.Event()

    def run(self, event: Any = None) -> None:
        if not self.output.get("suspended"):
            self.output["suspended"] = True
            SuspendsOnce.suspending.set()
            self.suspend()


# -- the SING scenarios, on both worlds ------------------------------------------------------


@pytest.mark.parametrize("action_class", [NoPhases, FinalizeOnly], ids=["SING-01", "SING-02"])
def test_a_plan_holds_the_lock_from_planning_until_it_stops(
    world: Any, action_class: type[Singleton]
) -> None:
    plan = world.plan(action_class)
    assert plan.state == PlanState.PLANNED
    assert holder(world.storage, action_class) == plan.id
    done = world.execute(plan.id).wait(TIMEOUT)
    assert outcome(done) == (PlanState.STOPPED, Result.SUCCESS)
    assert holder(world.storage, action_class) is None


def test_sing_03_a_suspended_step_keeps_the_lock(world: Any) -> None:
    SuspendsOnce.suspending.clear()
    plan = world.plan(SuspendsOnce)
    triggered = world.execute(plan.id)
    assert SuspendsOnce.suspending.wait(TIMEOUT)
    assert holder(world.storage, SuspendsOnce) == plan.id
    assert world.load(plan.id).state == PlanState.RUNNING
    world.event(plan.id, 2, None)
    assert outcome(triggered.wait(TIMEOUT)) == (PlanState.STOPPED, Result.SUCCESS)
    assert holder(world.storage, SuspendsOnce) is None


def test_sing_04_only_one_plan_is_active_and_a_plan_without_the_lock_cannot_run(
    world: Any,
) -> None:
    name = class_name(WithRun)
    plan1 = world.plan(WithRun)
    assert outcome(plan1) == (PlanState.PLANNED, Result.PENDING)
    plan2 = world.plan(WithRun)
    assert outcome(plan2) == (PlanState.STOPPED, Result.ERROR)
    assert plan2.error is not None
    assert plan2.error.exception_class == "pydynflow.errors.PlanningError"
    assert plan2.error.message.startswith(f"Action {name} is already active")
    assert plan1.id in plan2.error.message
    assert outcome(world.load(plan2.id)) == (PlanState.STOPPED, Result.ERROR)
    assert holder(world.storage, WithRun) == plan1.id  # a refused plan lets go of nothing

    assert world.storage.delete_record(LOCK_CLASS, name) == 1  # released by hand
    plan3 = world.plan(WithRun)
    assert plan3.state == PlanState.PLANNED
    assert holder(world.storage, WithRun) == plan3.id

    # plan1 lost its lock to an active plan: its run step fails without running.
    paused = world.execute(plan1.id).wait(TIMEOUT)
    assert outcome(paused) == (PlanState.PAUSED, Result.ERROR)
    step = paused.steps[2]
    assert step.state == StepState.ERROR and step.error is not None
    assert f"Action {name} is already active" in step.error.message
    assert plan3.id in step.error.message
    assert paused.actions[1].output == {}  # its code did not run
    assert holder(world.storage, WithRun) == plan3.id  # its pause lets go of nothing

    done = world.execute(plan3.id).wait(TIMEOUT)
    assert outcome(done) == (PlanState.STOPPED, Result.SUCCESS)
    assert holder(world.storage, WithRun) is None


@pytest.mark.parametrize(
    ("fail", "ends"),
    [(False, (PlanState.STOPPED, Result.SUCCESS)), (True, (PlanState.PAUSED, Result.ERROR))],
    ids=["stopped", "paused-on-an-error"],
)
def test_sing_06_a_plan_lets_go_when_it_stops_or_pauses_on_an_error(
    world: Any, fail: bool, ends: tuple[PlanState, Result]
) -> None:
    plan = world.plan(WithRun, fail=fail)
    assert holder(world.storage, WithRun) == plan.id
    done = world.execute(plan.id).wait(TIMEOUT)
    assert outcome(done) == ends
    assert outcome(world.load(plan.id)) == ends
    assert holder(world.storage, WithRun) is None
    # The next one plans and runs.
    assert outcome(world.trigger(WithRun).wait(TIMEOUT)) == (PlanState.STOPPED, Result.SUCCESS)


class PlansASingletonThenFails(Action):
    def plan(self) -> None:
        self.plan_action(WithRun)
        raise RuntimeError("planning breaks after the singleton")


def test_a_plan_that_fails_planning_lets_go_of_the_lock_it_took(world: Any) -> None:
    plan = world.plan(PlansASingletonThenFails)
    assert outcome(plan) == (PlanState.STOPPED, Result.ERROR)
    assert holder(world.storage, WithRun) is None
    assert world.plan(WithRun).state == PlanState.PLANNED


class Flaky(Singleton):
    broken = True

    def run(self) -> None:
        if Flaky.broken:
            raise RuntimeError("broken")


def test_a_plan_resumed_after_an_error_takes_the_lock_again_if_it_is_free(world: Any) -> None:
    Flaky.broken = True
    first = world.trigger(Flaky).wait(TIMEOUT)
    assert outcome(first) == (PlanState.PAUSED, Result.ERROR)
    assert holder(world.storage, Flaky) is None
    second = world.plan(Flaky)  # a new one may start meanwhile
    assert holder(world.storage, Flaky) == second.id
    refused = world.resume(first.id).wait(TIMEOUT)
    assert outcome(refused) == (PlanState.PAUSED, Result.ERROR)
    assert "is already active" in str(refused.steps[2].error)
    assert holder(world.storage, Flaky) == second.id
    Flaky.broken = False
    assert outcome(world.execute(second.id).wait(TIMEOUT)) == (PlanState.STOPPED, Result.SUCCESS)
    assert holder(world.storage, Flaky) is None
    done = world.resume(first.id).wait(TIMEOUT)  # free now: it takes the lock and runs
    assert outcome(done) == (PlanState.STOPPED, Result.SUCCESS)
    assert done.steps[2].attempts == 3
    assert holder(world.storage, Flaky) is None


# -- stale locks -----------------------------------------------------------------------------


class PlanningFails(Action):
    def plan(self) -> None:
        raise RuntimeError("no plan")


def _put_lock(storage: Storage, owner: str, data: dict[str, Any] | None) -> None:
    encoded = None if data is None else json.dumps(data).encode()
    storage.put_record(LOCK_CLASS, class_name(WithRun), encoded, owner_id=owner)


def test_a_lock_whose_plan_stopped_is_taken_over(world: Any) -> None:
    stopped = world.plan(PlanningFails)
    assert stopped.state == PlanState.STOPPED
    _put_lock(world.storage, stopped.id, {"taken_at": time.time()})  # a row left by a crash
    plan = world.plan(WithRun)
    assert plan.state == PlanState.PLANNED
    assert holder(world.storage, WithRun) == plan.id


def test_a_lock_of_a_plan_that_was_never_stored_is_taken_over_once_orphaned(world: Any) -> None:
    missing = str(uuid.uuid4())
    # Taken just now: a planning in progress (its plan is stored once planned).
    _put_lock(world.storage, missing, {"plan_id": missing, "taken_at": time.time()})
    refused = world.plan(WithRun)
    assert outcome(refused) == (PlanState.STOPPED, Result.ERROR)
    assert missing in str(refused.error)
    # Taken long ago, or by a record that does not say when: its planning died.
    for data in ({"taken_at": time.time() - ORPHANED_AFTER - 1}, None):
        _put_lock(world.storage, missing, data)
        plan = world.plan(WithRun)
        assert plan.state == PlanState.PLANNED
        assert holder(world.storage, WithRun) == plan.id
        assert world.storage.delete_record(LOCK_CLASS, class_name(WithRun), plan.id) == 1


def test_planning_without_a_database_takes_no_lock() -> None:
    action = create_and_plan_action(WithRun, fail=False)
    assert action.input == {"fail": False}


# -- threads, stops and restarts (World) -----------------------------------------------------


class Blocks(Singleton):
    started = threading.Event()
    release = threading.Event()

    def run(self) -> None:
        Blocks.started.set()
        assert Blocks.release.wait(TIMEOUT)


def test_a_second_trigger_while_the_first_runs_fails_planning(url: str) -> None:
    Blocks.started.clear()
    Blocks.release.clear()
    with World(url) as world:
        first = world.trigger(Blocks)
        assert Blocks.started.wait(TIMEOUT)
        second = world.trigger(Blocks)
        assert not second.planned
        assert second.error is not None
        message = second.error.message
        assert f"Action {class_name(Blocks)} is already active" in message
        assert first.id in message
        with pytest.raises(PlanningError):
            raise second.error.exception()
        assert outcome(second.wait(TIMEOUT)) == (PlanState.STOPPED, Result.ERROR)
        Blocks.release.set()
        assert outcome(first.wait(TIMEOUT)) == (PlanState.STOPPED, Result.SUCCESS)
        assert holder(world.storage, Blocks) is None
        Blocks.started.clear()
        third = world.trigger(Blocks)  # after the first stopped, a new one plans and runs
        assert third.planned
        assert outcome(third.wait(TIMEOUT)) == (PlanState.STOPPED, Result.SUCCESS)
        assert holder(world.storage, Blocks) is None


class Parked(Singleton):
    """Suspends until an event comes (again after a restart, which runs it with None)."""

    parked = threading.Event()

    def run(self, event: Any = None) -> None:
        if event is None:
            Parked.parked.set()
            self.suspend()
        self.output["event"] = event


def test_a_plan_paused_by_a_stop_keeps_the_lock_across_a_restart(url: str) -> None:
    Parked.parked.clear()
    with World(url) as world:
        plan = world.trigger(Parked)
        assert Parked.parked.wait(TIMEOUT)
    paused = World(url, executor=False).load(plan.id)
    assert paused.state == PlanState.PAUSED and paused.pause_reason() == "stop"
    client = World(url, executor=False)
    try:
        assert holder(client.storage, Parked) == plan.id
        refused = client.plan(Parked)
        assert outcome(refused) == (PlanState.STOPPED, Result.ERROR)
        assert plan.id in str(refused.error)
    finally:
        client.stop()
    Parked.parked.clear()
    with World(url) as restarted:  # continues the plan: its step runs (and parks) again
        assert [t.id for t in restarted.auto_executed] == [plan.id]
        assert Parked.parked.wait(TIMEOUT)
        assert holder(restarted.storage, Parked) == plan.id
        assert "is already active" in str(restarted.plan(Parked).error)
        restarted.event(plan.id, 2, "go")
        done = restarted.auto_executed[0].wait(TIMEOUT)
        assert outcome(done) == (PlanState.STOPPED, Result.SUCCESS)
        assert done.actions[1].output == {"event": "go"}
        assert holder(restarted.storage, Parked) is None
        assert restarted.plan(Parked).state == PlanState.PLANNED


def _plan_at_once(worlds: tuple[World, ...]) -> list[ExecutionPlan]:
    """Plan `WithRun` on one thread per world, all let go by one event; return the plans."""
    go = threading.Event()
    plans: list[ExecutionPlan] = []
    errors: list[BaseException] = []

    def plan_one(world: World) -> None:
        assert go.wait(TIMEOUT)
        try:
            plans.append(world.plan(WithRun))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=plan_one, args=(world,)) for world in worlds]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors
    return plans


def test_two_threads_planning_at_once_exactly_one_plans(url: str) -> None:
    with World(url) as executor, World(url, executor=False) as client:
        for _ in range(5):
            plans = _plan_at_once((executor, client))
            planned = [plan for plan in plans if plan.state == PlanState.PLANNED]
            refused = [plan for plan in plans if plan.state == PlanState.STOPPED]
            assert (len(planned), len(refused)) == (1, 1), [outcome(p) for p in plans]
            assert planned[0].id in str(refused[0].error)
            assert holder(executor.storage, WithRun) == planned[0].id
            executor.halt(planned[0].id)  # stopped where it stands: it lets go
            assert executor.load(planned[0].id).state == PlanState.STOPPED
            assert holder(executor.storage, WithRun) is None


def test_a_plan_paused_for_a_person_after_its_world_died_lets_go(url: str) -> None:
    Blocks.started.clear()
    Blocks.release.clear()
    world = World(url).start()
    try:
        plan = world.trigger(Blocks)
        assert Blocks.started.wait(TIMEOUT)
    finally:
        world.stop(timeout=0)  # as if killed: the step stays stored running
        Blocks.release.set()
    client = World(url, executor=False)
    try:
        assert client.load(plan.id).state == PlanState.RUNNING
        assert plan.id in str(client.plan(Blocks).error)  # its world may yet be alive
    finally:
        client.stop()
    with World(url, max_recoveries=1) as restarted:
        paused = restarted.load(plan.id)
        assert paused.pause_reason() == "recoveries"
        assert holder(restarted.storage, Blocks) is None
        assert restarted.plan(Blocks).state == PlanState.PLANNED
