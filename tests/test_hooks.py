"""HOOK-* scenarios: ``@on_plan`` execution-plan hooks.

A hook runs once per committed transition for every action of the plan that declares one,
on the world's hook thread (inline on `InThreadWorld`), never on the plan's critical path.
`World.stop` runs the hooks still queued, so a test stops its world before it counts. HOOK-03
and the delay half of HOOK-07 delay plans (`World.delay`), which `InThreadWorld` does not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from pydynflow import (
    Action,
    ExecutionPlan,
    Fail,
    Pause,
    PlanState,
    Result,
    Skip,
    World,
    on_plan,
)
from pydynflow.events import Skip as SkipEvent
from pydynflow.logging import configure_logging
from pydynflow.testing import InThreadWorld

TIMEOUT = 30
CHAIN = ["pending", "scheduled", "planning", "planned", "running", "paused", "stopped"]


class Calls:
    """What hooks did, by plan id (hooks run on another thread: guarded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_plan: dict[str, list[Any]] = {}

    def add(self, plan_id: str, item: Any) -> None:
        with self._lock:
            self._by_plan.setdefault(plan_id, []).append(item)

    def of(self, plan_id: str) -> list[Any]:
        with self._lock:
            return list(self._by_plan.get(plan_id, []))


CALLS = Calls()


# -- actions ---------------------------------------------------------------------------------


class FlagHook(Action):
    """Dynflow's FlagHook: the hook bodies of execution_plan_hooks_test."""

    def raise_flag(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, str(plan.state))

    def controlled_failure(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "controlled failure")
        raise RuntimeError("A controlled failure")

    def raise_flag_root_only(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, (self.id, plan.root_action_id == self.id))


class ActionWithHooks(FlagHook):
    @on_plan("success")
    def raise_flag(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "success")


class Inherited(ActionWithHooks):
    pass


class Overridden(ActionWithHooks):
    raise_flag = None  # type: ignore[assignment]  # turns the inherited hook off


class Redefined(ActionWithHooks):
    def raise_flag(self, plan: ExecutionPlan) -> None:  # still the success hook
        CALLS.add(plan.id, "redefined")


class ActionOnStop(FlagHook):
    def run(self) -> None:
        self.output["ran"] = True

    @on_plan("stopped")
    def controlled_failure(self, plan: ExecutionPlan) -> None:
        super().controlled_failure(plan)


class RootOnlyAction(FlagHook):
    @on_plan("stopped")
    def raise_flag_root_only(self, plan: ExecutionPlan) -> None:
        super().raise_flag_root_only(plan)


class ComposedAction(RootOnlyAction):
    def plan(self) -> None:
        self.plan_action(RootOnlyAction)
        self.plan_action(RootOnlyAction)


class PendingAction(FlagHook):
    @on_plan("pending")
    def raise_flag(self, plan: ExecutionPlan) -> None:
        super().raise_flag(plan)


class ActionOnFailure(FlagHook):
    @on_plan("failure")
    def raise_flag(self, plan: ExecutionPlan) -> None:
        super().raise_flag(plan)


class AllTransitionsAction(FlagHook):
    def run(self) -> None:
        self.output["ran"] = True

    @on_plan()
    def raise_flag(self, plan: ExecutionPlan) -> None:
        stored = plan.world.load(plan.id).state  # committed before the hook runs
        CALLS.add(plan.id, (str(plan.state), str(stored)))


class BareDecorator(FlagHook):
    @on_plan
    def raise_flag(self, plan: ExecutionPlan) -> None:
        super().raise_flag(plan)


class ActionOnPause(FlagHook):
    rescue = Pause

    def run(self) -> None:
        raise RuntimeError("pause")

    @on_plan("paused")
    def raise_flag(self, plan: ExecutionPlan) -> None:
        super().raise_flag(plan)


class Ending(Action):
    """Records its end: ``stopped``, then ``success`` or ``failure``."""

    @on_plan("stopped")
    def stopped(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "stopped")

    @on_plan("success")
    def succeeded(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "success")

    @on_plan("failure")
    def failed(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "failure")


class FailsAndStops(Ending):
    rescue = Fail

    def run(self) -> None:
        raise RuntimeError("stop me")


class FailsAndIsSkipped(Ending):
    rescue = Skip

    def run(self, event: Any = None) -> None:
        if not isinstance(event, SkipEvent):
            raise RuntimeError("skip me")


class SuspendsUntilHalted(Ending):
    def run(self, event: Any = None) -> None:
        GATES[self.input["gate"]].set()
        self.suspend()


class FailsInPlan(Action):
    def plan(self) -> None:
        raise RuntimeError("no plan")

    @on_plan()
    def every(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, str(plan.state))

    @on_plan("failure")
    def failed(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, ("failure", str(plan.result)))


class Outputs(Action):
    def run(self) -> None:
        self.output["answer"] = 42

    @on_plan("success")
    def report(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, (self.phase, dict(self.input), dict(self.output)))


GATES: dict[str, threading.Event] = {}


class SlowHook(Action):
    """Its ``running`` hook blocks until the test opens the gate named in its input."""

    def run(self) -> None:
        self.output["ran"] = True

    @on_plan("running")
    def slow(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "running:entered")
        GATES[self.input["gate"] + ":entered"].set()
        assert GATES[self.input["gate"]].wait(TIMEOUT)
        CALLS.add(plan.id, "running:left")

    @on_plan("stopped")
    def stopped(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "stopped")

    @on_plan("success")
    def succeeded(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, "success")


class Suspends(Action):
    """Suspends until an event that never comes: the stop pauses its plan."""

    def run(self, event: Any = None) -> None:
        GATES[self.input["gate"]].set()
        self.suspend()

    @on_plan("paused")
    def paused(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, (str(plan.state), plan.pause_reason()))


class WhereHooksRun(Action):
    def run(self) -> None:
        self.output["pid"] = os.getpid()

    @on_plan("success")
    def where(self, plan: ExecutionPlan) -> None:
        CALLS.add(plan.id, (os.getpid(), threading.current_thread().name))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=["World", "InThreadWorld"])
def world(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Any]:
    """Yield a started `World`, or an `InThreadWorld`, on a SQLite file."""
    if request.param == "World":
        started = World(sqlite_url, auto_execute=False)
        with started:
            yield started
    else:
        with InThreadWorld(sqlite_url) as in_thread:
            yield in_thread


def settle(world: Any) -> None:
    """Let every queued hook run: stop a `World` (an `InThreadWorld` runs them inline)."""
    if isinstance(world, World):
        world.stop(TIMEOUT)


# -- Dynflow's scenarios ---------------------------------------------------------------------


def test_hook01_success_hook(world: Any) -> None:
    plan = world.trigger(ActionWithHooks).wait(TIMEOUT)
    settle(world)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert CALLS.of(plan.id) == ["success"]


@pytest.mark.parametrize("auto_rescue", [False, True])
def test_hook02_paused_hook(sqlite_url: str, auto_rescue: bool) -> None:
    with World(sqlite_url, auto_rescue=auto_rescue, auto_execute=False) as world:
        plan = world.trigger(ActionOnPause).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert CALLS.of(plan.id) == ["paused"]


@pytest.mark.parametrize("auto_rescue", [False, True])
def test_hook02_paused_hook_in_thread(sqlite_url: str, auto_rescue: bool) -> None:
    with InThreadWorld(sqlite_url, auto_rescue=auto_rescue) as world:
        plan = world.trigger(ActionOnPause).wait(TIMEOUT)
        assert plan.state == PlanState.PAUSED
        assert CALLS.of(plan.id) == ["paused"]


def test_hook04_an_exception_in_a_hook_is_logged_and_changes_nothing(sqlite_url: str) -> None:
    configure_logging()  # before capturing, or pydynflow would take the capture for the app's
    with capture_logs() as logs, World(sqlite_url, auto_execute=False) as world:
        planned = world.plan(ActionOnStop)
        plan = world.execute(planned.id).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert CALLS.of(plan.id) == ["controlled failure"]
    with World(sqlite_url, executor=False) as reader:
        stored = reader.load(plan.id)
    assert (stored.state, stored.result) == (PlanState.STOPPED, Result.SUCCESS)
    failures = [line for line in logs if line["event"] == "execution-plan hook failed"]
    assert len(failures) == 1
    assert failures[0]["plan_id"] == plan.id
    assert failures[0]["action_id"] == 1
    assert failures[0]["action_class"].endswith("test_hooks.ActionOnStop")
    assert (failures[0]["hook"], failures[0]["kind"]) == ("controlled_failure", "stopped")
    assert failures[0]["log_level"] == "error" and failures[0]["exc_info"]


def test_hook06_a_hook_tells_the_root_action_from_sub_actions(world: Any) -> None:
    plan = world.trigger(ComposedAction).wait(TIMEOUT)
    settle(world)
    assert plan.root_action_id == 1
    assert CALLS.of(plan.id) == [(1, True), (2, False), (3, False)]  # ran for all 3


def test_hook07_pending_hook_runs_once_on_creation(world: Any) -> None:
    plan = world.trigger(PendingAction).wait(TIMEOUT)
    settle(world)
    assert CALLS.of(plan.id) == ["pending"]


def test_hook03_failure_hook_when_a_delayed_plan_is_cancelled(sqlite_url: str) -> None:
    with World(sqlite_url, auto_execute=False) as world:
        start_at = datetime.now(UTC) + timedelta(seconds=180)
        plan = world.delay(ActionOnFailure, {"start_at": start_at})
        assert world.cancel(plan.id) == 1
    assert CALLS.of(plan.id) == ["stopped"]  # the failure hook, of a stopped plan


def test_hook07_pending_hook_runs_once_when_delayed_then_cancelled(sqlite_url: str) -> None:
    with World(sqlite_url, auto_execute=False) as world:
        start_at = datetime.now(UTC) + timedelta(seconds=180)
        plan = world.delay(PendingAction, {"start_at": start_at})
        world.cancel(plan.id)
    assert CALLS.of(plan.id) == ["pending"]


def test_a_delayed_plan_goes_through_every_state(sqlite_url: str) -> None:
    with World(sqlite_url, auto_execute=False) as world:
        plan = world.delay(AllTransitionsAction, {})  # due now: this world's delayed executor
        assert world._delayed is not None and world._delayed.wait_for_poll(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while world.load(plan.id).state != PlanState.STOPPED and time.monotonic() < deadline:
            time.sleep(0.01)  # the executor's progress, seen through storage (noqa: sleep-ok)
    kinds = [kind for kind, _ in CALLS.of(plan.id)]
    assert kinds == ["pending", "scheduled", "planning", "planned", "running", "stopped"]


def test_hook08_a_bare_hook_runs_on_every_transition(world: Any) -> None:
    plan = world.trigger(AllTransitionsAction).wait(TIMEOUT)
    settle(world)
    calls = CALLS.of(plan.id)
    kinds = [kind for kind, _ in calls]
    assert kinds == ["pending", "planning", "planned", "running", "stopped"]
    for kind, stored in calls:  # a hook runs once its transition is committed
        assert CHAIN.index(stored) >= CHAIN.index(kind), calls


# -- inheritance and kinds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "expected"),
    [(Inherited, ["success"]), (Overridden, []), (Redefined, ["redefined"])],
    ids=["inherited", "turned-off", "overridden"],
)
def test_subclasses_inherit_hooks(world: Any, action: type[Action], expected: list[str]) -> None:
    plan = world.trigger(action).wait(TIMEOUT)
    settle(world)
    assert plan.result == Result.SUCCESS
    assert CALLS.of(plan.id) == expected


def test_bare_decorator_without_parentheses(world: Any) -> None:
    plan = world.trigger(BareDecorator).wait(TIMEOUT)
    settle(world)
    assert CALLS.of(plan.id) == ["pending", "planning", "planned", "running", "stopped"]


@pytest.mark.parametrize(
    ("action", "result", "kind"),
    [
        (Ending, "success", "success"),
        (FailsAndStops, "error", "failure"),
        (FailsAndIsSkipped, "warning", "failure"),  # Dynflow's failure?: error, warning, cancelled
    ],
)
def test_stopped_is_followed_by_success_or_failure(
    sqlite_url: str, action: type[Action], result: str, kind: str
) -> None:
    with World(sqlite_url, auto_rescue=True, auto_execute=False) as world:
        plan = world.trigger(action).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, result)
    assert CALLS.of(plan.id) == ["stopped", kind]


def test_a_halted_plan_with_steps_not_done_counts_as_success(sqlite_url: str) -> None:
    GATES["halted"] = threading.Event()
    with World(sqlite_url, auto_execute=False) as world:
        triggered = world.trigger(SuspendsUntilHalted, {"gate": "halted"})
        assert GATES["halted"].wait(TIMEOUT)
        world.halt(triggered.id)
        plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.PENDING)
    assert CALLS.of(plan.id) == ["stopped", "success"]  # Dynflow's failure?: not pending


def test_a_plan_failing_in_planning_stops_with_failure(world: Any) -> None:
    triggered = world.trigger(FailsInPlan)
    assert not triggered.planned
    settle(world)
    assert CALLS.of(triggered.id) == ["pending", "planning", "stopped", ("failure", "error")]


def test_a_hook_gets_the_stored_action_in_the_present_phase(world: Any) -> None:
    plan = world.trigger(Outputs, {"question": "?"}).wait(TIMEOUT)
    settle(world)
    assert CALLS.of(plan.id) == [("present", {"question": "?"}, {"answer": 42})]


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown hook kind 'finished'"):
        on_plan("success", "finished")


# -- off the critical path -------------------------------------------------------------------


def test_a_slow_hook_does_not_delay_its_plan(sqlite_url: str) -> None:
    gate = "slow"
    GATES[gate], GATES[gate + ":entered"] = threading.Event(), threading.Event()
    with World(sqlite_url, auto_execute=False) as world:
        plan = world.trigger(SlowHook, {"gate": gate}).wait(TIMEOUT)  # the hook still blocks
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert GATES[gate + ":entered"].wait(TIMEOUT)
        assert CALLS.of(plan.id) == ["running:entered"]
        GATES[gate].set()
    # The later hooks waited behind it, in the order of the transitions.
    assert CALLS.of(plan.id) == ["running:entered", "running:left", "stopped", "success"]


def test_the_stop_runs_the_hooks_of_the_plans_it_pauses(sqlite_url: str) -> None:
    GATES["suspends"] = threading.Event()
    with World(sqlite_url, auto_execute=False) as world:
        triggered = world.trigger(Suspends, {"gate": "suspends"})
        assert GATES["suspends"].wait(TIMEOUT)
    assert CALLS.of(triggered.id) == [("paused", "stop")]


def test_hooks_run_in_the_world_process_with_a_process_executor(sqlite_url: str) -> None:
    with World(sqlite_url, executor="processes", pool_size=1, auto_execute=False) as world:
        plan = world.trigger(WhereHooksRun).wait(TIMEOUT)
    assert plan.steps[2].output["pid"] != os.getpid()  # the step ran in a worker process
    assert CALLS.of(plan.id) == [(os.getpid(), "pydynflow-hooks")]


def test_a_client_world_runs_the_hooks_of_what_it_plans(sqlite_url: str) -> None:
    World(sqlite_url).start().stop()  # creates the database
    with World(sqlite_url, executor=False) as client:
        plan = client.plan(AllTransitionsAction)
    assert [kind for kind, _ in CALLS.of(plan.id)] == ["pending", "planning", "planned"]
