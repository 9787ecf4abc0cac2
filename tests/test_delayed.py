"""FUT-* scenarios: delayed plans (`World.delay`) and the delayed executor, on virtual time.

Each world runs on a `ManagedClock`: a plan falls due when the test moves the clock, and
`DelayedExecutor.wait_for_poll` waits for the polls that move asked for. A due plan then
runs on the world's executor; `ended` waits for it (a deadline, not a sleep standing in for
synchronisation). Every test runs on a SQLite file, SQLite in memory and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pydynflow import (
    Action,
    ExecutionPlan,
    PlanningError,
    PlanState,
    Result,
    SerializationError,
    StepState,
    UnknownPlan,
    World,
)
from pydynflow.clock import wall_time
from pydynflow.delayed import DelayedPlan
from pydynflow.scheduling.executor import LOCK_CLASS, LOCK_ID
from pydynflow.testing import ManagedClock
from tests.support.delayed_actions import Box, Dummy, DummyCustomDelaySerializer, Unboxes

TIMEOUT = 30


@pytest.fixture
def clock() -> ManagedClock:
    return ManagedClock()


@pytest.fixture
def world(db_url: str, clock: ManagedClock) -> Iterator[World]:
    with World(db_url, clock=clock, auto_execute=False) as started:
        yield started


def polled(world: World) -> None:
    """Wait until the delayed executor has made every poll asked for so far."""
    assert world._delayed is not None and world._delayed.wait_for_poll(TIMEOUT)


def ended(world: World, plan_id: str) -> ExecutionPlan:
    """Wait until the plan (handed to the executor by a poll) is stopped; return it."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        plan = world.load(plan_id)
        if plan.state == PlanState.STOPPED:
            return plan
        if time.monotonic() > deadline:
            raise AssertionError(f"plan {plan_id} is still {plan.state}")
        time.sleep(0.01)  # the executor's progress, seen through storage (noqa: sleep-ok)


def history(plan: ExecutionPlan) -> list[str]:
    return [entry.name for entry in plan.history]


# -- FUT-01: delay ----------------------------------------------------------------------------


def test_fut01_delay_stores_a_scheduled_plan_with_its_plan_step_only(
    world: World, clock: ManagedClock
) -> None:
    start_at = clock.utcnow() + timedelta(seconds=180)
    plan = world.delay(Dummy, {"start_at": start_at}, {"x": 1})
    assert plan.state == PlanState.SCHEDULED
    loaded = world.load(plan.id)
    assert loaded.state == PlanState.SCHEDULED and loaded.result == Result.PENDING
    assert list(loaded.steps) == [1] and loaded.root_plan_step_id == 1
    assert loaded.steps[1].state == StepState.PENDING
    assert history(loaded) == ["delay"]
    assert loaded.progress() == 0
    delayed = loaded.delayed_plan()
    assert isinstance(delayed, DelayedPlan)
    assert delayed.start_at == start_at  # to the microsecond, not only the second
    assert (delayed.start_before, delayed.frozen, delayed.blocked_by) == (None, False, ())
    assert delayed.args["args"] == [{"x": 1}]
    assert [p.id for p in world.plans(state="scheduled")] == [plan.id]


def test_fut01_a_delayed_plan_runs_once_its_start_at_has_come(
    world: World, clock: ManagedClock
) -> None:
    plan = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=180)}, {"x": 7})
    clock.advance(179)
    polled(world)
    assert world.load(plan.id).state == PlanState.SCHEDULED
    clock.advance(1)
    polled(world)
    done = ended(world, plan.id)
    assert done.result == Result.SUCCESS
    assert done.steps[2].output == {"x": 7}
    assert history(done) == ["delay", "start execution", "finish execution"]
    assert done.delayed_plan() is None and world.storage.delayed_plan(plan.id) is None


def test_a_plan_delayed_without_start_at_runs_at_once(world: World) -> None:
    plan = world.delay(Dummy, {}, {"x": 2})  # this world's delayed executor is poked
    polled(world)
    assert ended(world, plan.id).steps[2].output == {"x": 2}


def test_keyword_arguments_and_a_custom_serializer_reach_plan(world: World) -> None:
    plan = world.delay(Unboxes, {"start_at": None}, Box([1, "two"]), label="boxed")
    assert world.load(plan.id).delayed_plan().args == {  # type: ignore[union-attr]
        "serializer": "tests.support.delayed_actions.BoxSerializer",
        "args": [{"box": [1, "two"]}],
        "kwargs": {"label": "boxed"},
    }
    polled(world)
    done = ended(world, plan.id)
    assert done.result == Result.SUCCESS
    assert done.actions[1].input == {"content": [1, "two"], "label": "boxed"}


# -- FUT-02: cancel ---------------------------------------------------------------------------


def test_fut02_cancel_a_delayed_plan(world: World, clock: ManagedClock) -> None:
    plan = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=180)})
    assert world.cancel(plan.id) == 1
    cancelled = world.load(plan.id)
    assert (cancelled.state, cancelled.result) == (PlanState.STOPPED, Result.CANCELLED)
    assert cancelled.steps[1].state == StepState.CANCELLED
    assert history(cancelled) == ["delay", "cancel", "Delayed task cancelled"]
    assert cancelled.delayed_plan() is None
    clock.advance(200)
    polled(world)
    assert history(world.load(plan.id)) == history(cancelled)  # never planned
    assert world.cancel(plan.id) == 0  # nothing left to cancel


def test_halt_a_delayed_plan(world: World, clock: ManagedClock) -> None:
    plan = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)})
    world.halt(plan.id, by="tester")
    halted = world.load(plan.id)
    assert (halted.state, halted.result) == (PlanState.STOPPED, Result.PENDING)
    assert history(halted) == ["delay", "halt", "finish execution"]
    assert halted.history[1].details["user"] == "tester"  # type: ignore[index]
    assert world.storage.delayed_plan(plan.id) is None
    clock.advance(60)
    polled(world)
    assert world.load(plan.id).history == halted.history


# -- FUT-03: serializer failure ---------------------------------------------------------------


def test_fut03_a_serializer_failure_stops_the_plan_and_raises(
    world: World, clock: ManagedClock
) -> None:
    start_at = clock.utcnow() + timedelta(seconds=180)
    with pytest.raises(RuntimeError, match="Enforced serializer failure"):
        world.delay(DummyCustomDelaySerializer, {"start_at": start_at}, "fail")
    newest = world.plans(order_by="ended_at", desc=True, limit=1)[0]
    assert (newest.state, newest.result) == (PlanState.STOPPED, Result.ERROR)
    assert newest.error is not None and newest.error.message == "Enforced serializer failure"
    assert newest.delayed_plan() is None
    ok = world.delay(DummyCustomDelaySerializer, {"start_at": start_at}, "fine")
    assert ok.state == PlanState.SCHEDULED


def test_arguments_json_cannot_hold_stop_the_plan(world: World) -> None:
    with pytest.raises(SerializationError, match="delayed arguments"):
        world.delay(Dummy, {}, {"when": datetime.now(UTC)})
    [failed] = world.plans()
    assert (failed.state, failed.result) == (PlanState.STOPPED, Result.ERROR)
    assert history(failed) == ["finish execution"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start_at": datetime(2030, 1, 1)}, "aware datetime"),  # naive: which zone?
        ({"start": None}, "unknown delay option 'start'"),
        ({"frozen": "yes"}, "frozen must be a bool"),
    ],
)
def test_bad_options_are_refused_before_anything_is_stored(
    world: World, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        world.delay(Dummy, options)
    assert world.plans() == []


def test_only_action_classes_are_delayed(world: World) -> None:
    with pytest.raises(PlanningError):
        world.delay(dict, {})  # type: ignore[arg-type]


# -- FUT-04: ready plans ----------------------------------------------------------------------


def test_fut04_ready_plans_query(db_url: str, clock: ManagedClock) -> None:
    with World(db_url, clock=clock, delayed_executor=False) as world:
        now = clock.utcnow()
        past = world.delay(Dummy, {"start_at": now - timedelta(seconds=100)})
        world.delay(Dummy, {"start_at": now + timedelta(seconds=100)})  # not due
        world.delay(Dummy, {"start_at": None, "frozen": True})  # frozen
        expired = world.delay(
            Dummy,
            {"start_at": now + timedelta(seconds=500), "start_before": now - timedelta(seconds=1)},
        )
        ready = world.storage.ready_delayed_plans(now - timedelta(seconds=90))
        assert [due.plan_id for due in ready] == [past.id]  # FUT-04: start_at + 10
        ready = world.storage.ready_delayed_plans(now)  # and the one past its deadline
        assert [due.plan_id for due in ready] == [past.id, expired.id]
        assert [due.state for due in ready] == ["scheduled", "scheduled"]
        assert world.storage.next_delayed_start(now) == now + timedelta(seconds=100)
        assert world._delayed is None  # delayed_executor=False: nothing runs them
        assert world.load(past.id).state == PlanState.SCHEDULED


# -- FUT-06: expiry ---------------------------------------------------------------------------


def test_fut06_a_plan_not_started_before_its_deadline_fails(
    world: World, clock: ManagedClock
) -> None:
    now = clock.utcnow()
    start_before = now + timedelta(seconds=60)
    plan = world.delay(
        Dummy, {"start_at": now + timedelta(seconds=120), "start_before": start_before}
    )
    clock.advance(60)
    polled(world)
    expired = world.load(plan.id)
    assert (expired.state, expired.result) == (PlanState.STOPPED, Result.ERROR)
    assert expired.error is not None
    assert "could not be started before set time" in expired.error.message
    assert start_before.isoformat() in expired.error.message
    assert history(expired) == ["delay", "timeout"]
    assert expired.delayed_plan() is None
    clock.advance(120)
    polled(world)
    assert history(world.load(plan.id)) == ["delay", "timeout"]


def test_a_plan_due_before_its_deadline_runs(world: World, clock: ManagedClock) -> None:
    now = clock.utcnow()
    plan = world.delay(
        Dummy,
        {"start_at": now + timedelta(seconds=10), "start_before": now + timedelta(seconds=60)},
    )
    clock.advance(10)
    polled(world)
    assert ended(world, plan.id).result == Result.SUCCESS


# -- frozen plans -----------------------------------------------------------------------------


def test_a_frozen_plan_waits_until_thawed(world: World, clock: ManagedClock) -> None:
    plan = world.delay(Dummy, {"start_at": None, "frozen": True}, {"x": 3})
    clock.advance(60)
    polled(world)
    assert world.load(plan.id).state == PlanState.SCHEDULED
    assert world.load(plan.id).delayed_plan().frozen  # type: ignore[union-attr]
    later = clock.utcnow() + timedelta(seconds=30)
    assert world.set_delayed_frozen(plan.id, False, start_at=later)
    assert world.load(plan.id).delayed_plan().start_at == later  # type: ignore[union-attr]
    clock.advance(29)
    polled(world)
    assert world.load(plan.id).state == PlanState.SCHEDULED
    clock.advance(1)
    polled(world)
    assert ended(world, plan.id).steps[2].output == {"x": 3}
    assert not world.set_delayed_frozen(plan.id, True)  # planned: no record left
    with pytest.raises(UnknownPlan):
        world.set_delayed_frozen("no-such-plan", False)


# -- FUT-07 / FUT-08: what a dead delayed executor left ---------------------------------------


def test_fut07_a_plan_left_planning_is_planned_again(world: World, clock: ManagedClock) -> None:
    plan = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)}, {"x": 4})
    # A delayed executor claimed it, then its process died before storing the plan.
    assert world.storage.claim_delayed_plans([plan.id]) == [plan.id]
    assert world.load(plan.id).state == PlanState.PLANNING
    clock.advance(60)
    polled(world)
    done = ended(world, plan.id)
    assert (done.result, done.steps[2].output) == (Result.SUCCESS, {"x": 4})
    assert history(done) == ["delay", "start execution", "finish execution"]


def test_fut08_the_record_of_a_plan_already_running_is_dropped(
    world: World, clock: ManagedClock
) -> None:
    plan = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)})
    # A process stored the plan running, then stopped before deleting its record.
    assert world.storage.claim_plan(plan.id, ("scheduled",), "running")
    clock.advance(60)
    polled(world)
    assert world.storage.step_state(plan.id) == PlanState.RUNNING  # left as it is
    assert world.storage.delayed_plan(plan.id) is None


# -- FUT-09: polling --------------------------------------------------------------------------


def test_fut09_the_delayed_executor_polls_every_interval_while_a_plan_waits(
    db_url: str,
) -> None:
    clock = ManagedClock()
    world = World(db_url, clock=clock, auto_execute=False)
    world.start()
    try:
        polled(world)  # the first poll, at start
        delayed = world._delayed
        assert delayed is not None and delayed.polls == 1 and delayed.holding
        assert clock.pending() == []  # nothing waits: no timer armed (virtual time is free)
        world.delay(Dummy, {"frozen": True})  # waits until thawed: no poll for it
        polled(world)
        assert delayed.polls == 1 and clock.pending() == []
        world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(days=1)})
        assert [timer.due for timer in clock.pending()] == [15.0]  # the poll due first
        clock.advance(15)
        polled(world)
        assert delayed.polls == 2
        assert [timer.due for timer in clock.pending()] == [30.0]
        assert world.storage.record_owner(LOCK_CLASS, LOCK_ID) == world.id
    finally:
        world.stop()
    assert clock.pending() == []
    assert delayed.polls == 2


def test_a_poll_is_armed_for_the_earliest_plan_due_before_the_next(
    world: World, clock: ManagedClock
) -> None:
    world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=100)})
    polled(world)
    assert [timer.due for timer in clock.pending()] == [15.0]
    soon = world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=5)})
    assert [timer.due for timer in clock.pending()] == [5.0, 15.0]
    clock.advance(5)
    polled(world)
    assert ended(world, soon.id).result == Result.SUCCESS
    assert [timer.due for timer in clock.pending()] == [15.0]


def test_the_poll_interval_is_configurable(db_url: str) -> None:
    clock = ManagedClock()
    with World(db_url, clock=clock, delayed_poll_interval=2.5) as world:
        world.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)})
        polled(world)
        assert [timer.due for timer in clock.pending()] == [2.5]
    with pytest.raises(ValueError, match="delayed_poll_interval"):
        World(db_url, delayed_poll_interval=0)


def test_a_world_without_a_delayed_executor_never_plans_delayed_plans(
    sqlite_url: str, clock: ManagedClock
) -> None:
    with World(sqlite_url, clock=clock, delayed_executor=False) as world:
        plan = world.delay(Dummy, {})
        clock.advance(60)
        assert world._delayed is None and clock.pending() == []
        assert world.load(plan.id).state == PlanState.SCHEDULED
        assert world.storage.record_owner(LOCK_CLASS, LOCK_ID) is None


# -- one delayed executor per database --------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A database two worlds of this process share: a SQLite file, a PostgreSQL schema."""
    return str(
        request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param])
    )


def test_one_delayed_executor_per_database_and_a_takeover_when_it_stops(
    shared_url: str, clock: ManagedClock
) -> None:
    first = World(shared_url, clock=clock, auto_execute=False).start()
    second = World(shared_url, clock=clock, auto_execute=False).start()
    try:
        polled(first)
        polled(second)
        assert first._delayed is not None and second._delayed is not None
        assert (first._delayed.holding, second._delayed.holding) == (True, False)
        assert first.storage.record_owner(LOCK_CLASS, LOCK_ID) == first.id
        plan = second.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=10)})
        clock.advance(15)  # delayed in the other world: found by the holder's next poll
        polled(first)
        polled(second)
        ran = ended(second, plan.id)
        assert ran.history[1].world_id == first.id  # the holder planned and ran it
        first.stop()
        assert second.storage.record_owner(LOCK_CLASS, LOCK_ID) is None  # let go
        later = second.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=10)})
        clock.advance(15)  # the second's next poll takes the lock over
        polled(second)
        assert second._delayed.holding
        assert ended(second, later.id).history[1].world_id == second.id
    finally:
        first.stop()
        second.stop()


def test_the_lock_of_a_world_that_is_gone_is_taken_over(
    shared_url: str, clock: ManagedClock
) -> None:
    with World(shared_url, executor=False, create=True) as client:
        client.storage.put_record(LOCK_CLASS, LOCK_ID, None, owner_id="a-world-long-gone")
        plan = client.delay(Dummy, {}, {"x": 5})
    with World(shared_url, clock=clock, auto_execute=False) as world:
        polled(world)
        assert world.storage.record_owner(LOCK_CLASS, LOCK_ID) == world.id
        assert ended(world, plan.id).steps[2].output == {"x": 5}


def test_a_client_world_delays_and_an_executor_runs_it(
    shared_url: str, clock: ManagedClock
) -> None:
    with (
        World(shared_url, clock=clock, auto_execute=False) as executor,
        World(shared_url, executor=False) as client,
    ):
        polled(executor)
        plan = client.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=5)}, {"x": 6})
        assert client.load(plan.id).state == PlanState.SCHEDULED
        clock.advance(15)  # found by the executor's next poll
        polled(executor)
        assert ended(client, plan.id).steps[2].output == {"x": 6}
        other = client.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)})
        assert client.cancel(other.id) == 1  # no executor needed: it is not planned yet
        assert client.load(other.id).result == Result.CANCELLED


def test_a_plan_is_claimed_once(shared_url: str, clock: ManagedClock) -> None:
    with World(shared_url, clock=clock, delayed_executor=False) as world:
        plan = world.delay(Dummy, {})
        assert world.storage.claim_delayed_plans([plan.id]) == [plan.id]
        assert world.storage.claim_delayed_plans([plan.id]) == []  # a second executor
        assert world.cancel(plan.id) == 0  # claimed: no longer cancelled as scheduled
        assert world.storage.unclaim_delayed_plans([plan.id]) == 1
        assert world.cancel(plan.id) == 1


class CountsPlanning(Action):
    planned: list[str] = []

    def plan(self) -> None:
        CountsPlanning.planned.append(self.execution_plan_id)
        self.plan_self()

    def run(self) -> None:
        pass


def test_many_plans_due_at_once_are_each_planned_once(shared_url: str, clock: ManagedClock) -> None:
    CountsPlanning.planned.clear()
    first = World(shared_url, clock=clock, auto_execute=False).start()
    second = World(shared_url, clock=clock, auto_execute=False).start()
    try:
        start_at = clock.utcnow() + timedelta(seconds=30)
        plans = [first.delay(CountsPlanning, {"start_at": start_at}) for _ in range(250)]
        clock.advance(30)
        polled(first)
        polled(second)
        for plan in plans:
            assert ended(first, plan.id).result == Result.SUCCESS
        assert sorted(CountsPlanning.planned) == sorted(plan.id for plan in plans)
    finally:
        first.stop()
        second.stop()


class OnSlowQueue(Action):
    queue = "slow"

    def run(self) -> None:
        self.output["ran"] = True


def test_a_plan_of_a_queue_the_holder_does_not_serve_goes_to_those_that_do(
    shared_url: str, clock: ManagedClock
) -> None:
    with World(shared_url, clock=clock, auto_execute=False) as holder:
        polled(holder)
        with World(shared_url, clock=clock, queues={"slow": 1}) as slow:
            polled(slow)
            assert holder._delayed is not None and holder._delayed.holding
            plan = holder.delay(OnSlowQueue, {})
            polled(holder)
            done = ended(holder, plan.id)
            assert done.result == Result.SUCCESS
            assert done.executing_world_id() == slow.id
            assert history(done) == ["delay", "start execution", "finish execution"]
            assert holder.storage.delayed_plan(plan.id) is None


def test_a_plan_delayed_in_another_world_wakes_the_holder(
    shared_url: str, clock: ManagedClock
) -> None:
    with (
        World(shared_url, clock=clock, auto_execute=False) as executor,
        World(shared_url, executor=False) as client,
    ):
        polled(executor)
        assert clock.pending() == []  # nothing waits: the holder is idle
        now = client.delay(Dummy, {}, {"x": 1})  # asks the holder for a poll
        assert ended(client, now.id).steps[2].output == {"x": 1}
        later = client.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=30)})
        deadline = time.monotonic() + TIMEOUT
        while not clock.pending():  # the holder polled, and polls again while a plan waits
            assert time.monotonic() < deadline, clock.pending()
            time.sleep(0.01)  # the request travels through the database (noqa: sleep-ok)
        clock.advance(30)
        polled(executor)
        assert ended(client, later.id).result == Result.SUCCESS
        # A plan due after another waiting one needs no request: the holder polls for the
        # first, then arms its next poll for the second.
        first = client.delay(Dummy, {"start_at": clock.utcnow() + timedelta(seconds=60)})
        storage, base = client.storage, clock.utcnow()
        assert storage.delayed_poll_due_before("another", base + timedelta(seconds=90))
        assert not storage.delayed_poll_due_before("another", base + timedelta(seconds=45))
        assert not storage.delayed_poll_due_before(first.id, base + timedelta(seconds=90))


def test_the_managed_clock_tells_the_date_its_virtual_seconds_make() -> None:
    start = datetime(2030, 1, 1, 12, tzinfo=UTC)
    clock = ManagedClock(wall=start)
    assert clock.utcnow() == start and wall_time(clock) == start
    clock.advance(90)
    assert clock.utcnow() == start + timedelta(seconds=90)
    before = datetime.now(UTC)
    assert before <= wall_time(object()) <= datetime.now(UTC)  # a clock without utcnow
