"""Suspend and events: EXEC-*/DISP-*/HALT-* scenarios about events, polling, cancel, halt."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import (
    Action,
    EventRejected,
    PlanState,
    Result,
    StepState,
    UnknownPlan,
    UnknownStep,
    World,
)
from tests.support import code_workflow as ex1
from tests.support.dummy_example import (
    POLL_PAUSE,
    CancelableSuspended,
    DeprecatedEventedAction,
    PlanEventsAction,
    PollingExample,
)
from tests.support.gates import HoldsTheWorker

TIMEOUT = 30


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with World(sqlite_url, auto_rescue=False, auto_execute=False) as started:
        yield started


@pytest.fixture(autouse=True)
def _release_pauses() -> Iterator[None]:
    POLL_PAUSE.reset()
    yield
    POLL_PAUSE.release.set()


class Parked(Action):
    """Suspend with a callback that tells the test where the step is."""

    parked: dict[str, threading.Event] = {}

    def run(self, event: Any = None) -> None:
        if event is None:
            self.output["runs"] = self.output.get("runs", 0) + 1
            key = self.input["key"]
            self.suspend(lambda ref: Parked.parked[key].set())
        self.output["event"] = event


def park(world: World, key: str) -> tuple[Any, int]:
    Parked.parked[key] = threading.Event()
    triggered = world.trigger(Parked, {"key": key})
    assert Parked.parked[key].wait(TIMEOUT)
    return triggered, 2


def test_event_resumes_a_suspended_step(world: World) -> None:
    triggered, step_id = park(world, "resume")
    assert world.load(triggered.id).steps[step_id].state == StepState.SUSPENDED
    assert world.event(triggered.id, step_id, {"hello": "world"}) is True
    finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert finished.steps[step_id].output == {"runs": 1, "event": {"hello": "world"}}


def test_disp02_event_sent_while_running_is_queued(world: World) -> None:
    triggered = world.trigger(DeprecatedEventedAction, {"timeout": 3600})
    world.event(triggered.id, 2, "finish")  # the step may still be running: queued
    finished = triggered.wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output == {"event": "finish"}


def test_events_race_with_suspend_and_are_never_lost(world: World) -> None:
    triggered = [world.trigger(DeprecatedEventedAction, {}) for _ in range(100)]
    for one in triggered:
        world.event(one.id, 2, "finish")
    finished = [one.wait(TIMEOUT) for one in triggered]
    assert all(plan.steps[2].output == {"event": "finish"} for plan in finished)


def test_disp03_event_to_a_finished_plan_is_rejected(world: World) -> None:
    finished = world.trigger(ex1.Dummy).wait(TIMEOUT)
    with pytest.raises(EventRejected):
        world.event(finished.id, 1, "finish")
    assert world.event(finished.id, 1, "finish", optional=True) is False


def test_unknown_plan_and_step(world: World) -> None:
    with pytest.raises(UnknownPlan):
        world.event("no-such-plan", 1, "x")
    triggered, step_id = park(world, "unknown")
    with pytest.raises(UnknownStep):
        world.event(triggered.id, 99, "x")
    world.event(triggered.id, step_id, "done")
    triggered.wait(TIMEOUT)


def test_event_payload_must_be_json(world: World) -> None:
    triggered, step_id = park(world, "json")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        world.event(triggered.id, step_id, {"when": object()})
    world.event(triggered.id, step_id, "ok")
    triggered.wait(TIMEOUT)


def test_plan_event_with_a_delay(world: World) -> None:
    finished = world.trigger(PlanEventsAction, {"ping_time": 0.01}).wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output == {"result": "pinged"}


def test_plan_event_timeout_fails_the_step(world: World) -> None:
    finished = world.trigger(DeprecatedEventedAction, {"timeout": 0.01}).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.PAUSED, Result.ERROR)
    assert finished.steps[2].error.message == "action timeouted"
    assert finished.steps[2].output == {"event": "timeout"}


def test_exec21_exec22_polling_to_completion_with_times(world: World) -> None:
    finished = world.trigger(PollingExample, {"external_task_id": "123"}).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    step = finished.steps[2]
    assert step.output["task"] == {"progress": 100, "done": True}
    assert step.started_at is not None and step.ended_at is not None
    assert step.execution_time < step.real_time  # suspended time is not execution time
    plan_step = finished.steps[1]
    assert plan_step.execution_time == plan_step.real_time
    assert finished.execution_time == pytest.approx(
        sum(s.execution_time for s in finished.steps.values()), abs=1e-6
    )


def test_exec19_error_in_invoke(world: World) -> None:
    finished = world.trigger(PollingExample, {"text": "troll setup"}).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.PAUSED, Result.ERROR)
    assert finished.steps[2].state == StepState.ERROR


def test_polling_retries_a_failing_poll(world: World) -> None:
    finished = world.trigger(PollingExample, {"text": "troll progress"}).wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output["trolled"] is True


def test_exec23_progress_while_polling(world: World) -> None:
    triggered = world.trigger(PollingExample, {"text": "pause in progress 20"})
    assert POLL_PAUSE.reached.wait(TIMEOUT)
    assert round(world.load(triggered.id).progress(), 2) == 0.2
    POLL_PAUSE.release.set()
    assert triggered.wait(TIMEOUT).result == Result.SUCCESS


def test_exec14_cancellable_not_cancelled(world: World) -> None:
    assert world.trigger(CancelableSuspended, {}).wait(TIMEOUT).result == Result.SUCCESS


def test_exec17_external_cancel(world: World) -> None:
    triggered = world.trigger(CancelableSuspended, {"text": "cancel-external"})
    assert world.cancel(triggered.id) == 1
    finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert finished.steps[2].output["task"]["cancelled"] is True


def test_exec18_force_cancel(world: World) -> None:
    triggered = world.trigger(CancelableSuspended, {"text": "cancel-external"})
    assert world.cancel(triggered.id, force=True) == 1
    assert triggered.wait(TIMEOUT).state == PlanState.STOPPED


def test_exec16_cancel_handler_fails(world: World) -> None:
    triggered = world.trigger(CancelableSuspended, {"text": "cancel-fail cancel-self"})
    finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.PAUSED, Result.ERROR)
    assert finished.steps[2].error.message == "action cancelled"
    assert finished.steps[2].output["task"]["progress"] == 30


def test_cancel_of_nothing_cancellable(world: World) -> None:
    triggered, step_id = park(world, "not-cancellable")
    assert world.cancel(triggered.id) == 0
    world.event(triggered.id, step_id, "done")
    triggered.wait(TIMEOUT)


def test_halt01_running_plan_with_a_suspended_step(world: World) -> None:
    triggered, step_id = park(world, "halt")
    world.halt(triggered.id)
    halted = triggered.wait(TIMEOUT)
    assert halted.state == PlanState.STOPPED
    assert world.load(triggered.id).steps[step_id].state == StepState.SUSPENDED


def test_halt02_paused_plan(world: World) -> None:
    plan = world.trigger(ex1.IncomingIssue, {"author": "x", "text": "trolling"}).wait(TIMEOUT)
    assert plan.state == PlanState.PAUSED
    world.halt(plan.id)
    halted = world.load(plan.id)
    assert halted.state == PlanState.STOPPED
    assert halted.steps[3].state == StepState.ERROR  # Triage's run step


def test_halt03_planned_plan(world: World) -> None:
    plan = world.plan(ex1.DummyWithFinalize, {})
    world.halt(plan.id)
    halted = world.load(plan.id)
    assert halted.state == PlanState.STOPPED
    assert halted.steps[2].state == StepState.PENDING


class ParkedBesideAHolder(Action):
    """A parked step beside one that holds its worker until the test lets it go."""

    def plan(self, key: str) -> None:
        with self.concurrence():
            self.plan_action(Parked, {"key": key})
            self.plan_action(HoldsTheWorker)


def test_a_halting_plan_rejects_events(world: World) -> None:
    """From `halt` on, the plan takes no event, even while a step still runs: the event
    would be stored for a plan that ends ``stopped`` and never runs it."""
    HoldsTheWorker.reset()
    Parked.parked["halting"] = threading.Event()
    triggered = world.trigger(ParkedBesideAHolder, "halting")
    try:
        assert Parked.parked["halting"].wait(TIMEOUT)
        assert HoldsTheWorker.started.wait(TIMEOUT)
        plan = world.load(triggered.id)
        (step_id,) = [a.run_step_id for a in plan.actions.values() if a.action_class is Parked]
        assert step_id is not None
        world.halt(triggered.id)
        with pytest.raises(EventRejected, match="halting"):
            world.event(triggered.id, step_id, "late")
        assert world.event(triggered.id, step_id, "late", optional=True) is False
        assert world.load(triggered.id).state == PlanState.RUNNING  # the holder still runs
    finally:
        HoldsTheWorker.release.set()
    halted = triggered.wait(TIMEOUT)
    assert halted.state == PlanState.STOPPED
    assert halted.steps[step_id].state == StepState.SUSPENDED
    assert world.storage.envelopes(triggered.id) == []
    assert not [e for e in halted.history if e.name == "event not delivered"]


class AsyncWaiter(Action):
    """An async run that records progress in output before each await."""

    async def run(self, event: Any = None) -> None:
        self.output["before"] = True
        first = await self.wait_for_event()
        self.output["first"] = first
        try:
            await self.wait_for_event(timeout=self.input.get("timeout"))
        except TimeoutError as error:
            self.output["timed_out"] = str(error)


def test_async_wait_for_event_and_timeout(world: World) -> None:
    triggered = world.trigger(AsyncWaiter, {"timeout": 0.01})
    world.event(triggered.id, 2, "one")
    finished = triggered.wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output == {
        "before": True,
        "first": "one",
        "timed_out": "Timeout exceeded.",
    }


def test_output_chunks_are_stored(world: World) -> None:
    class Chatty(Action):
        def run(self) -> None:
            self.output_chunk("line 1")
            self.output_chunk({"line": 2}, kind="json")

    finished = world.trigger(Chatty, {}).wait(TIMEOUT)
    chunks = world.storage.output_chunks(finished.id, finished.steps[2].action_id)
    assert [(c["chunk"], c["kind"]) for c in chunks] == [("line 1", None), ({"line": 2}, "json")]


class PingWithClock(Action):
    """plan_event with a delay, then signal the test once parked."""

    parked = threading.Event()

    def run(self, event: Any = None) -> None:
        if event is None:
            self.plan_event("ping", 30)
            self.schedule_timeout(60)
            self.suspend(lambda ref: PingWithClock.parked.set())
        self.output["event"] = event


def test_managed_clock_drives_plan_event_and_timeouts(sqlite_url: str) -> None:
    from pydynflow.testing import ManagedClock

    PingWithClock.parked.clear()
    clock = ManagedClock()
    with World(sqlite_url, clock=clock, auto_execute=False) as world:
        triggered = world.trigger(PingWithClock, {})
        assert PingWithClock.parked.wait(TIMEOUT)
        assert [timer.due for timer in clock.pending()] == [30.0, 60.0]
        assert clock.advance(29) == 0
        assert clock.advance(1) == 1  # virtual time: no one waited 30 s
        finished = triggered.wait(TIMEOUT)
        assert finished.steps[2].output == {"event": "ping"}
        assert clock.advance(30) == 1  # the timeout fires for a finished step: dropped
        assert world.load(triggered.id).result == Result.SUCCESS


class Window(Action):
    """run(None) signals that it started, waits until the test sent its event, suspends."""

    started: dict[str, threading.Event] = {}
    sent: dict[str, threading.Event] = {}

    def run(self, event: Any = None) -> None:
        key = self.input["key"]
        if event is None:
            Window.started[key].set()
            Window.sent[key].wait(TIMEOUT)
            self.suspend()
        self.output["event"] = event


def test_event_in_the_window_between_run_and_suspend_is_not_lost(world: World) -> None:
    for index in range(50):
        key = f"w{index}"
        Window.started[key], Window.sent[key] = threading.Event(), threading.Event()
        triggered = world.trigger(Window, {"key": key})
        assert Window.started[key].wait(TIMEOUT)
        assert world.event(triggered.id, 2, key) is True  # queued: the step is running
        Window.sent[key].set()
        assert triggered.wait(TIMEOUT).steps[2].output == {"event": key}


def test_timeout_fails_the_step_with_a_managed_clock(sqlite_url: str) -> None:
    from pydynflow.testing import ManagedClock

    class TimesOut(Action):
        parked = threading.Event()

        def run(self, event: Any = None) -> None:
            self.schedule_timeout(5)
            self.suspend(lambda ref: TimesOut.parked.set())

    clock = ManagedClock()
    with World(sqlite_url, clock=clock, auto_rescue=False) as world:
        triggered = world.trigger(TimesOut, {})
        assert TimesOut.parked.wait(TIMEOUT)
        clock.advance(5)
        failed = triggered.wait(TIMEOUT)
        assert (failed.state, failed.result) == (PlanState.PAUSED, Result.ERROR)
        assert failed.steps[2].error.message == "Timeout exceeded."


def test_finalize_sees_its_world_and_stores_its_chunks(world: World) -> None:
    class Finishing(Action):
        def run(self) -> None:
            self.output_chunk("from run")

        def finalize(self) -> None:
            self.output_chunk(f"world {self.world.id}", kind="finalize")

    finished = world.trigger(Finishing, {}).wait(TIMEOUT)
    chunks = world.storage.output_chunks(finished.id, finished.steps[2].action_id)
    assert [(c["chunk"], c["kind"]) for c in chunks] == [
        ("from run", None),
        (f"world {world.id}", "finalize"),
    ]


class ComposedAction(Action):
    """DISP-04: trigger a plan from inside run, park, finish when that plan is done."""

    def run(self, event: Any = None) -> None:
        if event is None:
            sub = self.world.trigger(ex1.Dummy, {})
            self.output["sub_plan_id"] = sub.id

            def when_done(ref: Any) -> None:
                sub.future.add_done_callback(lambda _: ref.send("finish"))

            self.suspend(when_done)
        self.output["event"] = event


def test_disp04_executor_acting_as_a_client(world: World) -> None:
    finished = world.trigger(ComposedAction, {}).wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output["event"] == "finish"
    sub = world.load(finished.steps[2].output["sub_plan_id"])
    assert (sub.state, sub.result) == (PlanState.STOPPED, Result.SUCCESS)


# -- no accepted event vanishes ------------------------------------------------------------


class TakesOneEvent(Action):
    """Suspend, tell the test; finish on the first event, recording every event it ran with."""

    parked: dict[str, threading.Event] = {}
    received: dict[str, list[Any]] = {}

    def run(self, event: Any = None) -> None:
        if event is None:
            key = self.input["key"]
            self.suspend(lambda ref: TakesOneEvent.parked[key].set())
        TakesOneEvent.received.setdefault(self.execution_plan_id, []).append(event)


def test_no_accepted_event_vanishes(sqlite_url: str) -> None:
    """Ten events at once to each of 100 suspended steps: the step takes one, and every
    other one is either refused or recorded as "event not delivered"."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
    from concurrent.futures import wait as wait_all

    world = World(sqlite_url, auto_rescue=False, auto_execute=False).start()
    pool = ThreadPoolExecutor(16)
    try:
        keys = [f"vanish-{n}" for n in range(100)]
        for key in keys:
            TakesOneEvent.parked[key] = threading.Event()
        triggered = [world.trigger(TakesOneEvent, {"key": key}) for key in keys]
        for key in keys:
            assert TakesOneEvent.parked[key].wait(TIMEOUT)

        def send(plan_id: str, n: int) -> bool:
            try:
                return world.event(plan_id, 2, {"n": n})
            except EventRejected:
                return False

        sent = [(one.id, pool.submit(send, one.id, n)) for n in range(10) for one in triggered]
        # Bounded: lost replies fail the test instead of hanging it (no call returning for
        # 5 s, when a thousand take about a second), an unexpected error fails it at once.
        unanswered: set[Any] = {call for _, call in sent}
        while unanswered:
            answered, unanswered = wait_all(unanswered, 5, return_when=FIRST_EXCEPTION)
            if not answered or any(call.exception() for call in answered):
                break
        errors = {type(call.exception()).__name__ for _, call in sent if call.done()} - {"NoneType"}
        assert not errors, f"world.event() raised {errors}"
        assert not unanswered, f"{len(unanswered)} world.event() calls never returned"
        accepted = dict.fromkeys((one.id for one in triggered), 0)
        for plan_id, call in sent:
            answer = call.result()  # True ("accepted"), or EventRejected (False); nothing else
            assert answer in (True, False)
            accepted[plan_id] += answer

        for one in triggered:
            finished = one.wait(TIMEOUT)
            assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
            events = TakesOneEvent.received[one.id]
            assert len(events) == 1 and events[0]["n"] in range(10)  # exactly one event
            stored = world.load(one.id)
            undelivered = [e for e in stored.history if e.name == "event not delivered"]
            assert all(set(e.details) == {"step_id", "event_id"} for e in undelivered)
            assert {e.details["step_id"] for e in undelivered} <= {2}
            assert len({e.details["event_id"] for e in undelivered}) == len(undelivered)
            assert accepted[one.id] == 1 + len(undelivered), (accepted[one.id], undelivered)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        world.stop(TIMEOUT)


def test_an_event_for_a_plan_whose_supervisor_just_stopped_is_answered(sqlite_url: str) -> None:
    """The window the test above hits by chance, held open: the plan's supervisor has
    stopped and the executor has not yet handled its PlanDone."""
    world = World(sqlite_url, auto_rescue=False, auto_execute=False).start()
    try:
        triggered, step_id = park(world, "supervisor-gone")
        # Internals, to hold the window open: stop the supervisor the executor still maps.
        supervisors = world._executor.proxy().supervisors.get()
        supervisors[triggered.id].stop()
        answers: list[Any] = []

        def send() -> None:
            try:
                answers.append(world.event(triggered.id, step_id, "late"))
            except Exception as error:
                answers.append(error)

        caller = threading.Thread(target=send, daemon=True)
        caller.start()
        caller.join(2)  # an actor round trip takes milliseconds
        assert answers, "world.event() never returned"
        assert isinstance(answers[0], EventRejected), answers
        assert world.event(triggered.id, step_id, "later", optional=True) is False
    finally:
        # The executor never hears of the stopped supervisor's end: do not wait for it.
        world.stop(timeout=1)


class CollectsEvents(Action):
    """An async run that takes ``count`` events one after the other, in a list."""

    async def run(self) -> None:
        got = []
        for _ in range(self.input["count"]):
            got.append(await self.wait_for_event())
        self.output["got"] = got


@pytest.mark.parametrize("senders", [1, 4])
def test_events_to_a_parked_step_are_applied_once_each_in_the_order_accepted(
    world: World, senders: int
) -> None:
    """An event for a parked, idle step goes to it before it is stored (its envelope is
    written with the step's move to running): events sent one after the other, or from
    several threads at once, each change the step once, in the order `event` accepted
    them, and none is left stored."""
    from concurrent.futures import ThreadPoolExecutor

    count = 40
    triggered = world.trigger(CollectsEvents, {"count": count})
    accepted: list[int] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        with lock:  # the order accepted is the order `event` returns in, one at a time
            assert world.event(triggered.id, 2, n) is True
            accepted.append(n)

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, range(count)))
    finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert finished.steps[2].output == {"got": accepted}
    assert world.storage.envelopes(triggered.id) == []
    assert not [e for e in finished.history if e.name == "event not delivered"]


def test_an_event_is_stored_and_answered_while_no_worker_is_free(sqlite_url: str) -> None:
    """The step an event is for waits for a worker; `event` does not: it returns once the
    event is stored, and the step runs with it when the worker is free."""
    HoldsTheWorker.reset()
    with World(sqlite_url, pool_size=1, auto_execute=False) as world:
        parked, step_id = park(world, "no-worker")
        holder = world.trigger(HoldsTheWorker)
        try:
            assert HoldsTheWorker.started.wait(TIMEOUT)
            assert world.event(parked.id, step_id, "go") is True
            assert [e[1] for e in world.storage.envelopes(parked.id)] == [step_id]
            assert world.load(parked.id).steps[step_id].state == StepState.SUSPENDED
        finally:
            HoldsTheWorker.release.set()
        finished = parked.wait(TIMEOUT)
        assert finished.steps[step_id].output == {"runs": 1, "event": "go"}
        assert holder.wait(TIMEOUT).result == Result.SUCCESS
        assert world.storage.envelopes(parked.id) == []


class CollectsInPlace(Action):
    """Appends each event to a list in its output, in place, until it has ``n``."""

    def run(self, event: Any = None) -> None:
        got = self.output.setdefault("got", [])
        if event is not None:
            got.append(event)
        if len(got) < self.input["n"]:
            self.suspend()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_output_changed_in_place_by_each_event_is_stored(world: World, n: int) -> None:
    """Each event's append must reach the store (it used to be lost every other time: the
    action's list was the record's own, so the change looked stored already)."""
    triggered = world.trigger(CollectsInPlace, {"n": n})
    for i in range(n):
        assert world.event(triggered.id, 2, f"e{i}")
    plan = triggered.wait(TIMEOUT)
    expected = [f"e{i}" for i in range(n)]
    assert plan.actions[1].output["got"] == expected
    assert world.load(triggered.id).actions[1].output["got"] == expected  # as stored
