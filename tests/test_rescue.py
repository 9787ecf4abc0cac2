"""RESC-* scenarios: rescue strategies, auto-rescue, and Retry as a restart policy."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, Fail, Pause, PlanState, Result, Retry, Skip, StepState, World
from tests.support.clocks import SignallingClock
from tests.support.rescue_example import (
    ActionWithSkip,
    ComplexActionWithFail,
    ComplexActionWithoutSkip,
    ComplexActionWithSkip,
)

TIMEOUT = 30


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with World(sqlite_url, auto_rescue=False, auto_execute=False) as started:
        yield started


@pytest.fixture
def rescuing(sqlite_url: str) -> Iterator[World]:
    with World(sqlite_url, auto_rescue=True, auto_execute=False) as started:
        yield started


@pytest.mark.parametrize(
    ("action", "args", "strategy"),
    [
        (ActionWithSkip, (1, "error_on_run"), Skip),  # RESC-01
        (ActionWithSkip, (1, "error_on_finalize"), Skip),  # RESC-02
        (ComplexActionWithSkip, ("error_on_run",), Skip),  # RESC-03
        (ComplexActionWithSkip, ("error_on_finalize",), Skip),  # RESC-04
        (ComplexActionWithFail, ("error_on_run",), Fail),  # RESC-06
        (ComplexActionWithoutSkip, ("error_on_run",), Pause),
    ],
)
def test_resc01_06_strategy_without_auto_rescue(world: World, action, args, strategy) -> None:
    plan = world.trigger(action, *args).wait(TIMEOUT)
    assert plan.rescue_strategy is strategy
    assert world.load(plan.id).state == PlanState.PAUSED


def test_resc07_skippable_action_in_run_phase(rescuing: World) -> None:
    plan = rescuing.trigger(ActionWithSkip, 1, "error_on_run").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    assert plan.steps[2].state == StepState.SKIPPED
    assert plan.steps[2].output["message"] == "skipped because some error as you wish"


def test_resc08_skippable_action_in_finalize_phase(rescuing: World) -> None:
    plan = rescuing.trigger(ActionWithSkip, 1, "error_on_finalize").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    assert plan.steps[2].output["message"] == "Been here"
    assert plan.steps[3].state == StepState.SKIPPED


def test_resc09_plan_with_skips(rescuing: World) -> None:
    plan = rescuing.trigger(ComplexActionWithSkip, "error_on_run").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    for step_id in (6, 9):
        assert plan.steps[step_id].state == StepState.SKIPPED
        assert plan.steps[step_id].output["message"] == "skipped because some error as you wish"
    assert plan.steps[12].state == StepState.SUCCESS  # ActionWithSkip 6 ran
    assert plan.steps[7].state == plan.steps[10].state == StepState.SKIPPED  # their finalize


def test_resc11_no_second_rescue(rescuing: World) -> None:
    plan = rescuing.trigger(ActionWithSkip, 1, "error_on_skip").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert plan.steps[2].error.message == "we failed on skip as well"


def test_resc12_plan_without_skips(rescuing: World) -> None:
    plan = rescuing.trigger(ComplexActionWithoutSkip, "error_on_run").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert [entry.name for entry in plan.history] == ["start execution", "pause execution"]
    assert {entry.world_id for entry in plan.history} == {rescuing.id}


def test_resc13_plan_with_fail(rescuing: World) -> None:
    plan = rescuing.trigger(ComplexActionWithFail, "error_on_run").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.ERROR)
    states = Counter(step.state for step in plan.steps.values())
    assert states == {StepState.SUCCESS: 6, StepState.PENDING: 6, StepState.ERROR: 1}
    assert [entry.name for entry in plan.history] == ["start execution", "finish execution"]


class Flaky(Action):
    """Fails its first ``failures`` runs (counted per plan in a class-level dict)."""

    rescue = Retry(2, backoff=10, factor=2, then=Pause)
    runs: Counter[str] = Counter()
    failed = threading.Event()

    def run(self) -> None:
        Flaky.runs[self.execution_plan_id] += 1
        if Flaky.runs[self.execution_plan_id] <= self.input["failures"]:
            Flaky.failed.set()
            raise RuntimeError(f"flaky failure {Flaky.runs[self.execution_plan_id]}")
        self.output["runs"] = Flaky.runs[self.execution_plan_id]


@pytest.mark.parametrize("auto_rescue", [False, True])
def test_retry_restarts_the_step_then_succeeds(sqlite_url: str, auto_rescue: bool) -> None:
    clock = SignallingClock()
    with World(sqlite_url, clock=clock, auto_rescue=auto_rescue) as world:
        triggered = world.trigger(Flaky, {"failures": 2})
        clock.advance_until_done(triggered)
        plan = triggered.wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        # attempts counts every run: the first and two retries
        assert plan.steps[2].attempts == 3 and plan.steps[2].output == {"runs": 3}
        assert clock.now() == 30.0  # backoffs of 10 s then 20 s, virtual


@pytest.mark.parametrize("auto_rescue", [False, True])
def test_retry_runs_out_then_its_then_applies(sqlite_url: str, auto_rescue: bool) -> None:
    clock = SignallingClock()
    with World(sqlite_url, clock=clock, auto_rescue=auto_rescue) as world:
        triggered = world.trigger(Flaky, {"failures": 5})
        clock.advance_until_done(triggered)
        plan = triggered.wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
        assert (plan.steps[2].attempts, plan.steps[2].retries) == (3, 2)
        assert plan.steps[2].error.message == "flaky failure 3"


class FailsOnce(Action):
    rescue = Retry(1, backoff=30)
    failed: set[str] = set()

    def run(self) -> None:
        if self.execution_plan_id not in FailsOnce.failed:
            FailsOnce.failed.add(self.execution_plan_id)
            raise RuntimeError("first attempt fails")


def test_retry_backoff_on_a_thousand_steps_holds_no_thread(sqlite_url: str) -> None:
    clock = SignallingClock()
    from pydynflow.world import DISPATCHER_THREADS

    with World(sqlite_url, clock=clock, pool_size=5) as world:
        # One plan through a backoff first, so that the world's lazy threads are started;
        # then the threads of this world (not those other tests may leave to end) are
        # counted: its dispatchers, its persistence and its pool at most may be added.
        warm_up = world.trigger(FailsOnce, {"n": -1})
        with clock.changed:
            assert clock.changed.wait_for(lambda: len(clock.pending()) == 1, timeout=60)
        clock.advance(30)
        assert warm_up.wait(60).result == Result.SUCCESS
        before = set(threading.enumerate())
        budget = DISPATCHER_THREADS + 1 + world.pool_size
        triggered = [world.trigger(FailsOnce, {"n": n}) for n in range(1000)]
        with clock.changed:
            assert clock.changed.wait_for(lambda: len(clock.pending()) == 1000, timeout=60)
        added = set(threading.enumerate()) - before
        # 1,000 backoffs wait on the clock, not on threads.
        assert len(added) <= budget, sorted(thread.name for thread in added)
        assert {timer.due for timer in clock.pending()} == {60.0}  # 30 s after the warm-up's
        clock.advance(30)
        plans = [one.wait(60) for one in triggered]
        assert all(plan.result == Result.SUCCESS for plan in plans)
        assert all(plan.steps[2].attempts == 2 for plan in plans)


def test_stopping_a_world_during_a_backoff_pauses_the_plan(sqlite_url: str) -> None:
    clock = SignallingClock()
    world = World(sqlite_url, clock=clock, auto_execute=False).start()
    triggered = world.trigger(Flaky, {"failures": 5})
    with clock.changed:
        assert clock.changed.wait_for(lambda: len(clock.pending()) == 1, timeout=TIMEOUT)
    world.stop(TIMEOUT)
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert plan.steps[2].attempts == 1


class SkipsFirst(Action):
    rescue = Skip

    def run(self) -> None:
        raise RuntimeError(f"failure of {self.input['name']}")


class TwoSkippablesInSequence(Action):
    def plan(self) -> None:
        with self.sequence():
            self.plan_action(SkipsFirst, {"name": "a"})
            self.plan_action(SkipsFirst, {"name": "b"})


def test_each_failed_step_is_rescued_once(rescuing: World) -> None:
    plan = rescuing.trigger(TwoSkippablesInSequence).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    assert [plan.steps[i].state for i in (3, 5)] == [StepState.SKIPPED, StepState.SKIPPED]
    assert plan.steps[3].error.message == "failure of a"  # the reason it was skipped


class RetriedSkip(Action):
    rescue = Retry(3, backoff=10)
    events: list[Any] = []

    def run(self, event: Any = None) -> None:
        RetriedSkip.events.append(type(event).__name__ if event is not None else None)
        raise RuntimeError("always")


def test_a_failed_skip_is_not_retried(sqlite_url: str) -> None:
    RetriedSkip.events.clear()
    clock = SignallingClock()
    with World(sqlite_url, clock=clock, auto_rescue=False) as world:
        triggered = world.trigger(RetriedSkip, {})
        with clock.changed:
            assert clock.changed.wait_for(lambda: len(clock.pending()) == 1, timeout=TIMEOUT)
        world.stop(TIMEOUT)  # during the backoff: the plan pauses with the step failed
    with World(sqlite_url, clock=clock, auto_rescue=False, auto_execute=False) as world:
        world.skip(triggered.id, 2)
        plan = world.resume(triggered.id).wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
        assert RetriedSkip.events == [None, "Skip"]  # run(Skip) failed: no retry with None


class FlakyFinalize(Action):
    """Its finalize fails its first ``failures`` times; Retry re-runs the finalize phase."""

    rescue = Retry(2, backoff=5)
    calls: Counter[str] = Counter()

    def run(self) -> None:
        pass

    def finalize(self) -> None:
        FlakyFinalize.calls[self.execution_plan_id] += 1
        if FlakyFinalize.calls[self.execution_plan_id] <= self.input["failures"]:
            raise RuntimeError("finalize hiccup")


@pytest.mark.parametrize(("failures", "expected"), [(2, Result.SUCCESS), (3, Result.ERROR)])
def test_retry_reruns_a_failed_finalize_phase(sqlite_url: str, failures: int, expected) -> None:
    clock = SignallingClock()
    with World(sqlite_url, clock=clock) as world:
        triggered = world.trigger(FlakyFinalize, {"failures": failures})
        clock.advance_until_done(triggered)
        plan = triggered.wait(TIMEOUT)
        assert plan.result == expected
        assert plan.steps[3].attempts == 3
        assert FlakyFinalize.calls[plan.id] == 3
        assert clock.now() == 15.0  # backoffs of 5 s and 10 s
