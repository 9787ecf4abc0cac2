"""pydynflow.testing: one action in isolation (section 6, ACT-*) and the in-thread world."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from pydynflow import Action, DynflowError, EventRejected, SerializationError, UnknownPlan
from pydynflow.action import FINALIZE, PLAN, RUN
from pydynflow.events import Poll
from pydynflow.mixins import Polling
from pydynflow.states import PlanState, Result, StepState
from pydynflow.testing import (
    DummyWorld,
    InThreadWorld,
    ManagedClock,
    assert_action_planned,
    assert_action_planned_matching,
    assert_action_planned_with,
    assert_finalize_phase,
    assert_run_phase,
    create_and_plan_action,
    finalize_action,
    process_action_events,
    progress_action_time,
    refute_action_planned,
    refute_finalize_phase,
    refute_run_phase,
    run_action,
)
from tests.support import code_workflow as cw
from tests.support.dummy_example import CancelableSuspended, DeprecatedEventedAction, PollingExample

# -- actions under test --------------------------------------------------------------------


class EventedAction(Action):
    """ACT-03/04: plan a "ping" to itself after ``input.time`` (None: at once), suspend."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.plan_event("ping", self.input.get("time"))
            self.suspend()
        elif event == "ping":
            self.output["status"] = "pinged"


SERVICE: dict[str, Any] = {}  # the fake external service of the polling actions


@pytest.fixture(autouse=True)
def fresh_service() -> Iterator[None]:
    SERVICE.clear()
    SERVICE.update(tasks={}, fail=False, invocations=0, step=10)
    yield


class ServicePolling(Polling):
    """ACT-06..: poll a task of the fake service; each poll adds ``SERVICE["step"]``."""

    poll_max_retries = 2
    poll_intervals: tuple[float, ...] = (0.5, 1)
    attempts_before_next_interval = 2

    def invoke_external_task(self) -> Any:
        SERVICE["invocations"] += 1
        SERVICE["tasks"][123] = {"task_id": 123, "progress": 0}
        return dict(SERVICE["tasks"][123])

    def poll_external_task(self) -> Any:
        if SERVICE["fail"]:
            raise ConnectionError("the service is down")
        task = SERVICE["tasks"][self.external_task["task_id"]]
        task["progress"] += SERVICE["step"]
        return dict(task)

    def done(self) -> bool:
        task = self.external_task
        return task is not None and task["progress"] >= 100


class IncreasingIntervalPolling(ServicePolling):
    poll_intervals = (1, 2)
    attempts_before_next_interval = 2


class TimeoutPolling(ServicePolling):
    poll_intervals = (2,)

    def invoke_external_task(self) -> Any:
        self.schedule_timeout(5)
        return super().invoke_external_task()


FINALIZED: list[str] = []


class WeightedPolling(Action):
    """ACT-13/16/18: runs nothing, plans PollingExample after itself, finalizes a flag."""

    def plan(self, input: dict[str, Any]) -> None:
        with self.sequence():
            self.plan_self(input)
            self.plan_action(PollingExample, input)

    def run(self, event: Any = None) -> None:
        pass

    def finalize(self) -> None:
        FINALIZED.append("dummy_heavy_progress")


class StoresAnObject(Action):
    """PLAN-19: an output JSON cannot hold."""

    def run(self, event: Any = None) -> None:
        self.output["key"] = object()


class ForgetsPlanSelf(Action):
    """Defines run, but its plan() does not call plan_self: it gets no run step."""

    def plan(self) -> None:
        pass

    def run(self, event: Any = None) -> None:
        pass


class CallsBack(Action):
    """Suspend with a callback that sends the step an event through its reference."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend(lambda ref: ref.send({"answer": 42}))
        self.output["event"] = event


class AsyncRun(Action):
    """An ``async def run``: awaited on a new event loop by the helpers."""

    async def run(self, event: Any = None) -> None:
        self.output["event"] = event


class TriggersAChild(Action):
    """Trigger a polling plan from run: on an in-thread world it is queued, then run."""

    def run(self, event: Any = None) -> None:
        child = self.world.trigger(PollingExample, {})
        self.output["child"] = child.id
        self.output["child_done_in_run"] = child.done()


class SelfPing(Action):
    """ACT-23: suspend once, pinging itself after 1000 s."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.plan_event("ping", 1000)
            self.suspend()
        self.output["pinged_at"] = self.world.clock.now()
        RUN_THREADS.append(threading.get_ident())


RUN_THREADS: list[int] = []


def pending_pings(action: Action) -> int:
    return len(action.test_clock.pending())  # type: ignore[attr-defined]


# -- ACT-03/04: plan_event -----------------------------------------------------------------


def test_act03_plan_event_with_delay_is_armed_on_the_test_clock() -> None:
    action = run_action(create_and_plan_action(EventedAction, {"time": 0.5}))
    assert action.output.get("status") is None
    assert pending_pings(action) == 1
    assert action.test_clock.pending()[0].due == 0.5  # type: ignore[attr-defined]
    assert action.state == StepState.SUSPENDED == "suspended"  # type: ignore[attr-defined]
    assert action.events_to_process == []  # type: ignore[attr-defined]

    action = progress_action_time(action)
    assert action.output["status"] == "pinged"
    assert pending_pings(action) == 0
    assert action.state == "success"  # type: ignore[attr-defined]
    assert action.phase == RUN


def test_act04_plan_event_without_delay_is_queued_for_processing() -> None:
    action = run_action(create_and_plan_action(EventedAction, {"time": None}))
    assert pending_pings(action) == 0
    assert action.events_to_process == ["ping"]  # type: ignore[attr-defined]
    assert action.state == "suspended"  # type: ignore[attr-defined]

    action = process_action_events(action)
    assert action.output["status"] == "pinged"
    assert action.state == "success"  # type: ignore[attr-defined]
    assert action.events_to_process == []  # type: ignore[attr-defined]


def test_suspend_callback_sends_through_the_dummy_world() -> None:
    action = run_action(create_and_plan_action(CallsBack, {}))
    assert isinstance(action.world, DummyWorld)
    assert action.events_to_process == [{"answer": 42}]  # type: ignore[attr-defined]
    action = process_action_events(action)
    assert action.state == "success"  # type: ignore[attr-defined]
    assert action.output == {"event": {"answer": 42}}


def test_events_after_the_step_finished_are_dropped() -> None:
    action = run_action(create_and_plan_action(EventedAction, {"time": None}))
    action.world.event(action.execution_plan_id, action.run_step_id, "late")
    assert action.events_to_process == ["ping", "late"]  # type: ignore[attr-defined]
    action = process_action_events(action)
    assert action.output == {"status": "pinged"}
    assert action.events_to_process == []  # type: ignore[attr-defined]


def test_explicit_run_action_forgets_what_earlier_runs_planned() -> None:
    action = run_action(create_and_plan_action(EventedAction, {"time": 0.5}))
    clock = action.test_clock  # type: ignore[attr-defined]
    again = run_action(action)
    assert again.test_clock is clock  # type: ignore[attr-defined]
    assert len(clock.pending()) == 1  # the first run's timer was cancelled


def test_progress_action_time_without_timers_returns_the_action() -> None:
    action = run_action(create_and_plan_action(cw.Merge, {"ci_result": True, "review_results": []}))
    assert progress_action_time(action) is action
    with pytest.raises(DynflowError, match="run_action"):
        progress_action_time(create_and_plan_action(EventedAction, {}))


def test_async_run_is_awaited(world: InThreadWorld) -> None:
    assert run_action(create_and_plan_action(AsyncRun, {}), "go").output == {"event": "go"}
    plan = world.trigger(AsyncRun, {}).wait()
    assert (plan.state, plan.actions[1].output) == ("stopped", {"event": None})


# -- ACT-06..12: polling -------------------------------------------------------------------


def test_act06_polling_initiates_the_external_task() -> None:
    action = run_action(create_and_plan_action(ServicePolling, {}))
    assert action.output["task"]["task_id"] == 123
    assert action.state == "suspended"  # type: ignore[attr-defined]


def test_act07_polling_polls_until_the_task_is_done() -> None:
    action = run_action(create_and_plan_action(ServicePolling, {}))
    for _ in range(9):
        action = progress_action_time(action)
    assert action.done() is False  # type: ignore[attr-defined]
    assert pending_pings(action) == 1
    assert action.state == "suspended"  # type: ignore[attr-defined]

    action = progress_action_time(action)
    assert action.done() is True  # type: ignore[attr-defined]
    assert pending_pings(action) == 0
    assert action.state == "success"  # type: ignore[attr-defined]
    assert action.output["task"]["progress"] == 100


def test_act08_polling_resumes_by_polling_the_old_task() -> None:
    action = run_action(create_and_plan_action(ServicePolling, {}))
    assert action.output["task"]["progress"] == 0
    action = run_action(action)
    assert action.output["task"]["progress"] == 10
    assert SERVICE["invocations"] == 1


def test_act09_polling_resume_invokes_again_when_polling_the_old_task_fails() -> None:
    action = progress_action_time(run_action(create_and_plan_action(ServicePolling, {})))
    assert action.output["task"]["progress"] == 10
    SERVICE["fail"] = True
    # poll_max_retries=2: the first failed poll is only counted and the old task is kept...
    action = run_action(action)
    assert action.output["task"]["progress"] == 10
    assert action.output["poll_attempts"]["failed"] == 1
    assert SERVICE["invocations"] == 1
    # ...the second gives up on it: the task is invoked again.
    action = run_action(action)
    assert action.output["task"]["progress"] == 0
    assert SERVICE["invocations"] == 2
    assert action.state == "suspended"  # type: ignore[attr-defined]


def test_act11_polling_interval_grows() -> None:
    action = run_action(create_and_plan_action(IncreasingIntervalPolling, {}))
    dues = [action.test_clock.pending()[-1].due]  # type: ignore[attr-defined]
    for _ in range(2):
        action = progress_action_time(action)
        dues.append(action.test_clock.pending()[-1].due)  # type: ignore[attr-defined]
    assert dues[1] - dues[0] == pytest.approx(1)
    assert dues[2] - dues[1] == pytest.approx(2)


def test_act12_polling_times_out() -> None:
    SERVICE["step"] = 0  # the task never progresses
    action = run_action(create_and_plan_action(TimeoutPolling, {}))
    iterations = 0
    with pytest.raises(TimeoutError, match="Timeout exceeded."):
        while action.test_clock.pending():  # type: ignore[attr-defined]
            iterations += 1
            action = progress_action_time(action)
    assert iterations == 3  # polls at 2 s and 4 s, the timeout at 5 s
    assert action.test_clock.now() == 5  # type: ignore[attr-defined]


# -- ACT-13..21: planning in isolation, run and finalize -----------------------------------


def test_act13_create_and_plan_action() -> None:
    action = create_and_plan_action(WeightedPolling, {"input": "input"})
    assert action.phase == PLAN
    assert dict(action.input) == {"input": "input"}
    assert action.state == "success"  # type: ignore[attr-defined]
    assert action.execution_plan_id == "testing-plan"
    assert_run_phase(action)
    assert_run_phase(action, {"input": "input"})
    assert_finalize_phase(action)
    assert_action_planned(action, PollingExample)
    assert_action_planned(action, Polling)  # a base class matches too
    assert_action_planned_with(action, PollingExample, {"input": "input"})
    refute_action_planned(action, cw.DummyAnotherTrigger)


def test_act16_run_action_without_suspend() -> None:
    planned = create_and_plan_action(WeightedPolling, {"input": "input"})
    action = run_action(planned)
    assert action.phase == RUN
    assert action.input == planned.input
    assert action.run_step_id is not None
    assert action.run_step_id != action.plan_step_id
    assert action.state == "success"  # type: ignore[attr-defined]
    assert run_action(action).world is action.world


def test_act17_run_action_with_suspend() -> None:
    action = run_action(create_and_plan_action(PollingExample, {}))
    assert action.output == {
        "task": {"progress": 0, "done": False},
        "poll_attempts": {"total": 0, "failed": 0},
    }
    assert action.run_progress() == 0

    for _ in range(3):
        action = progress_action_time(action)
    assert action.output == {
        "task": {"progress": 30, "done": False},
        "poll_attempts": {"total": 3, "failed": 0},  # Dynflow reads 2 (a lost increment)
    }
    assert action.run_progress() == 0.3

    action = run_action(action, Poll())
    action = run_action(action, Poll())
    assert action.output["task"] == {"progress": 50, "done": False}
    assert action.output["poll_attempts"] == {"total": 5, "failed": 0}
    assert action.run_progress() == 0.5
    assert pending_pings(action) == 1

    for _ in range(5):
        action = progress_action_time(action)
    assert action.output == {
        "task": {"progress": 100, "done": True},
        "poll_attempts": {"total": 10, "failed": 0},
    }
    assert action.run_progress() == 1
    assert action.state == "success"  # type: ignore[attr-defined]
    assert pending_pings(action) == 0


def test_act18_finalize_action() -> None:
    FINALIZED.clear()
    run = run_action(create_and_plan_action(WeightedPolling, {"input": "input"}))
    action = finalize_action(run)
    assert action.phase == FINALIZE
    assert action.input == run.input
    assert action.output == run.output
    assert action.world is run.world
    assert action.finalize_step_id is not None
    assert action.finalize_step_id != action.run_step_id
    assert action.state == "success"  # type: ignore[attr-defined]
    assert FINALIZED == ["dummy_heavy_progress"]


def test_act19_commit_plans_ci_and_reviews() -> None:
    action = create_and_plan_action(cw.Commit, "commit-sha")
    assert dict(action.input) == {}
    refute_run_phase(action)
    refute_finalize_phase(action)
    assert_action_planned(action, cw.Ci)
    assert_action_planned_with(action, cw.Ci, {"commit": "commit-sha"})
    found = assert_action_planned_matching(
        action, cw.Review, lambda commit, reviewer, result: reviewer == "Morfeus"
    )
    assert found == [(cw.Review, ("commit-sha", "Morfeus", True), {})]
    assert_action_planned_with(action, cw.Review, "commit-sha", "Neo", True)
    with pytest.raises(DynflowError, match="Commit has no run phase"):
        run_action(action)
    with pytest.raises(DynflowError, match="planned without a run step"):
        run_action(create_and_plan_action(ForgetsPlanSelf))


@pytest.mark.parametrize(("reviews", "passed"), [([True, True], True), ([True, False], False)])
def test_act21_merge(reviews: list[bool], passed: bool) -> None:
    input = {"commit": "sha", "ci_result": True, "review_results": reviews}
    action = create_and_plan_action(cw.Merge, input)
    assert_run_phase(action, input)
    assert action.input["commit"] == "sha"
    refute_finalize_phase(action)
    assert action.planned_actions == []  # type: ignore[attr-defined]
    assert run_action(action).output["passed"] is passed


def test_assertion_messages_name_what_was_expected_and_found() -> None:
    commit = create_and_plan_action(cw.Commit, "commit-sha")
    merge = create_and_plan_action(cw.Merge, {"ci_result": True, "review_results": []})
    with pytest.raises(AssertionError, match=r"Triage was not planned by .*Commit; planned: Ci"):
        assert_action_planned(commit, cw.Triage)
    with pytest.raises(AssertionError, match=r"Review was planned by .*Commit, 2 time\(s\)"):
        refute_action_planned(commit, cw.Review)
    with pytest.raises(
        AssertionError, match=r"did not plan Review\('commit-sha', 'Trinity'\); .*'Neo', True\)"
    ):
        assert_action_planned_with(commit, cw.Review, "commit-sha", "Trinity")
    with pytest.raises(AssertionError, match="no Review planned by .* matches"):
        assert_action_planned_matching(commit, cw.Review, lambda *args: False)
    with pytest.raises(AssertionError, match="has no run phase"):
        assert_run_phase(commit)
    with pytest.raises(AssertionError, match=r"input .* != expected \{'ci_result': False\}"):
        assert_run_phase(merge, {"ci_result": False})
    with pytest.raises(AssertionError, match="has a run phase"):
        refute_run_phase(merge)
    with pytest.raises(AssertionError, match="has no finalize phase"):
        assert_finalize_phase(merge)
    weighted = create_and_plan_action(WeightedPolling, {})
    with pytest.raises(AssertionError, match="has a finalize phase"):
        refute_finalize_phase(weighted)
    with pytest.raises(TypeError, match="create_and_plan_action"):
        assert_action_planned(run_action(weighted), PollingExample)


# -- PLAN-18/19: serialisation -------------------------------------------------------------


def test_plan18_input_must_be_serialisable() -> None:
    with pytest.raises(SerializationError, match="input"):
        create_and_plan_action(cw.Merge, {"key": object()})


def test_plan19_output_must_be_serialisable() -> None:
    with pytest.raises(SerializationError, match="output"):
        run_action(create_and_plan_action(StoresAnObject, {}))


# -- ACT-22/23: the in-thread world --------------------------------------------------------


@pytest.fixture
def world() -> Iterator[InThreadWorld]:
    with InThreadWorld() as in_thread:
        yield in_thread


def test_act22_plans_run_in_the_calling_thread(world: InThreadWorld) -> None:
    threads = set(threading.enumerate())
    RUN_THREADS.clear()
    assert world.trigger(SelfPing, {}).wait().state == "stopped"
    assert set(RUN_THREADS) == {threading.get_ident()}
    triggered = world.trigger(cw.IncomingIssues, cw.ISSUES)
    assert set(threading.enumerate()) == threads
    assert triggered.done()
    plan = triggered.wait()
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    stored = world.load(triggered.id)
    assert (stored.state, stored.result) == ("stopped", "success")
    assert stored.steps[7].input == {
        "author": "Peter Smith",
        "text": "Failing test",
        "assignee": "John Doe",
        "severity": "medium",
    }
    assert stored.steps[4].output == {
        "classification": {"assignee": "John Doe", "severity": "medium"}
    }


def test_act22_a_failing_step_pauses_the_plan(world: InThreadWorld) -> None:
    issues = [cw.ISSUES[0], {"author": "John Doe", "text": "trolling"}]
    plan = world.trigger(cw.IncomingIssues, issues).wait()
    assert (plan.state, plan.result) == ("paused", "error")
    assert plan.steps[13].error is not None
    assert plan.steps[13].error.message == "Trolling detected"
    assert plan.steps[7].state == "success"  # the other branch went on

    world.skip(plan.id, 13)
    resumed = world.resume(plan.id).wait()
    assert (resumed.state, resumed.result) == ("stopped", "warning")


def test_act22_polling_completes_on_virtual_time(world: InThreadWorld) -> None:
    plan = world.trigger(PollingExample, {}).wait()
    assert (plan.state, plan.result) == ("stopped", "success")
    assert world.load(plan.id).actions[1].output["task"] == {"progress": 100, "done": True}
    assert world.clock.now() == pytest.approx(0.01)
    assert world.clock.pending() == []


def test_act23_unrelated_timers_are_left_alone(world: InThreadWorld) -> None:
    inbox: list[int] = []
    for i in range(20):  # "periodic_check_inbox" pings for another receiver
        world.clock.schedule(100_000 + i, partial(inbox.append, i))
    plan = world.trigger(SelfPing, {}).wait()
    assert plan.state == "stopped"
    assert plan.actions[1].output == {"pinged_at": 1000}
    assert inbox == []
    assert len(world.clock.pending()) == 20


def test_act23_timers_due_earlier_fire_as_time_passes(world: InThreadWorld) -> None:
    checks: list[float] = []

    def periodic_check_inbox() -> None:
        checks.append(world.clock.now())
        world.clock.schedule(60, periodic_check_inbox)

    world.clock.schedule(60, periodic_check_inbox)
    plan = world.trigger(SelfPing, {}).wait()
    assert plan.state == "stopped"
    assert checks == [60.0 * n for n in range(1, 17)]  # up to 960 s, then the ping at 1000 s


def test_a_step_waiting_for_an_event_waits_for_world_event(world: InThreadWorld) -> None:
    world.clock.schedule(10, lambda: None)  # an unrelated timer is not a reason to move
    triggered = world.trigger(DeprecatedEventedAction, {})
    assert not triggered.done()
    with pytest.raises(DynflowError, match=r"steps \[2\] are suspended"):
        triggered.wait()
    assert world.load(triggered.id).state == "running"
    assert world.load(triggered.id).steps[2].state == "suspended"
    assert world.clock.now() == 0
    assert world.execute(triggered.id).future.exception() is not None  # already running

    assert world.event(triggered.id, 2, "hello") is True
    plan = triggered.wait()
    assert (plan.state, plan.result) == ("stopped", "success")
    assert plan.actions[1].output == {"event": "hello"}
    with pytest.raises(EventRejected):
        world.event(triggered.id, 2, "again")
    assert world.event(triggered.id, 2, "again", optional=True) is False
    with pytest.raises(UnknownPlan):
        world.event("no-such-plan", 2, "x")


def test_a_timeout_fires_on_virtual_time(world: InThreadWorld) -> None:
    plan = world.trigger(DeprecatedEventedAction, {"timeout": 3600}).wait()
    assert (plan.state, plan.result) == ("paused", "error")
    assert plan.steps[2].error is not None
    assert plan.steps[2].error.message == "action timeouted"
    assert world.clock.now() == 3600


def test_without_auto_advance_the_test_moves_the_clock() -> None:
    with InThreadWorld(auto_advance=False, clock=ManagedClock()) as world:
        triggered = world.trigger(DeprecatedEventedAction, {"timeout": 10})
        assert not triggered.done()
        world.clock.advance(9)
        assert not triggered.done()
        world.clock.advance(1)
        assert triggered.wait().steps[2].error is not None


def test_events_sent_from_steps_are_queued(world: InThreadWorld) -> None:
    plan = world.trigger(CallsBack, {}).wait()
    assert plan.state == "stopped"
    assert plan.actions[1].output == {"event": {"answer": 42}}

    cancelled = world.trigger(CancelableSuspended, {"text": "cancel-self"}).wait()
    assert (cancelled.state, cancelled.result) == ("stopped", "success")
    assert cancelled.actions[1].output["task"] == {"progress": 30, "cancelled": True}


def test_plans_triggered_from_steps_run_after_them(world: InThreadWorld) -> None:
    plan = world.trigger(TriggersAChild, {}).wait()
    assert plan.state == "stopped"
    output = plan.actions[1].output
    assert output["child_done_in_run"] is False
    child = world.load(output["child"])
    assert (child.state, child.result) == ("stopped", "success")


def test_execute_refuses_what_cannot_run(world: InThreadWorld) -> None:
    plan = world.plan(cw.IncomingIssues, cw.ISSUES)
    assert world.execute(plan.id).wait().state == "stopped"
    with pytest.raises(DynflowError, match="not runnable"):
        world.execute(plan.id).wait()
    with pytest.raises(UnknownPlan):
        world.execute("no-such-plan").wait()
    failed = world.trigger(cw.IncomingIssue, cw.FAIL)
    assert not failed.planned
    assert failed.error is not None


def test_stopped_world_refuses_work() -> None:
    world = InThreadWorld()
    world.stop()
    world.stop()
    with pytest.raises(DynflowError, match="stopped"):
        world.trigger(cw.IncomingIssues, cw.ISSUES)
