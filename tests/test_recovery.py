"""Worlds that share a database, stop and start: several executors, skips from client worlds,
and what a restart does with the plans a stop or a crash interrupted.

On a SQLite file and on PostgreSQL (world locks and partial writes differ by backend).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pydynflow import Action, DynflowError, PlanState, Result, Retry, Skip, StepState, World
from pydynflow.storage.writer import FAULT_FILE
from tests.support.clocks import SignallingClock

TIMEOUT = 30


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """Return a fresh database URL: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


class Breaks(Action):
    """A step that fails until its input says otherwise."""

    def run(self) -> None:
        if self.input.get("fail", True):
            raise RuntimeError("broken")


class After(Action):
    def run(self) -> None:
        self.output["after"] = True


class BreaksThenGoesOn(Action):
    def plan(self) -> None:
        with self.sequence():
            self.plan_action(Breaks, {"fail": True})
            self.plan_action(After)


# -- several executor worlds on one database ---------------------------------------------


def test_two_executor_worlds_share_a_database(url: str) -> None:
    with World(url, name="daemon-1") as first, World(url, name="daemon-2") as second:
        names = {info.name: info for info in first.worlds()}
        assert {"daemon-1", "daemon-2"} <= set(names)
        assert all(names[n].executor and names[n].alive for n in ("daemon-1", "daemon-2"))
        done = [first.trigger(After), second.trigger(After)]
        assert [t.wait(TIMEOUT).result for t in done] == [Result.SUCCESS] * 2
        # A client world starts beside them, and recovers nothing.
        with World(url, executor=False) as client:
            assert {plan.result for plan in client.plans()} == {Result.SUCCESS}
    with World(url) as next_one:  # their records are gone with them
        assert [info.id for info in next_one.worlds()] == [next_one.id]


class Blocks(Action):
    """A step that waits for the test to let it go."""

    release = threading.Event()
    started = threading.Event()

    def run(self) -> None:
        Blocks.started.set()
        Blocks.release.wait(TIMEOUT)


def test_a_second_world_does_not_steal_a_live_worlds_running_plan(url: str) -> None:
    Blocks.release.clear()
    Blocks.started.clear()
    with World(url) as live:
        triggered = live.trigger(Blocks)
        assert Blocks.started.wait(TIMEOUT)
        with World(url, auto_execute=False) as second:  # it knows the plan's world lives
            assert second.load(triggered.id).steps[2].state == StepState.RUNNING
            with pytest.raises(DynflowError, match=f"is running on world {live.id}"):
                second.execute(triggered.id).wait(TIMEOUT)
        client = World(url, executor=False).start()
        client.stop()
        assert live.load(triggered.id).steps[2].state == StepState.RUNNING  # untouched
        Blocks.release.set()
        plan = triggered.wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)


# -- a skip through a world that was not started -----------------------------------------


def test_skip_through_an_unstarted_client_world_keeps_every_step(url: str) -> None:
    with World(url, auto_rescue=False) as executor:
        plan = executor.trigger(BreaksThenGoesOn).wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    operator = World(url, executor=False)  # not started: what an operator's script does
    try:
        operator.skip(plan.id, 3)
        skipped = operator.load(plan.id)
    finally:
        operator.stop()
    assert skipped.valid, skipped.exception
    assert sorted(skipped.steps) == sorted(plan.steps)
    assert skipped.steps[3].state == StepState.SKIPPING
    assert skipped.steps[5].state == StepState.PENDING  # after it: still to run
    assert skipped.history[-1].name == "skip"
    assert skipped.history[-1].details["step_id"] == 3
    with World(url) as executor:
        for triggered in executor.auto_executed:
            triggered.wait(TIMEOUT)
        finished = executor.resume(plan.id).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.WARNING)
    assert finished.steps[5].state == StepState.SUCCESS
    assert finished.actions[finished.steps[5].action_id].output == {"after": True}


# -- restarts apply what was already decided ---------------------------------------------


class RetriedLater(Action):
    """Fails twice, with a long backoff: a stop comes during it."""

    rescue = Retry(3, backoff=600, max_backoff=3600)
    runs: dict[str, int] = {}

    def run(self) -> None:
        RetriedLater.runs[self.execution_plan_id] = (
            RetriedLater.runs.get(self.execution_plan_id, 0) + 1
        )
        if RetriedLater.runs[self.execution_plan_id] <= 2:
            raise RuntimeError("not yet")


def test_a_restart_continues_a_retry_a_stop_interrupted(url: str) -> None:
    clock = SignallingClock()
    world = World(url, clock=clock).start()
    triggered = world.trigger(RetriedLater)
    clock.wait_for_timers(1)  # the first failure waits out its backoff
    world.stop(TIMEOUT)
    paused = triggered.wait(TIMEOUT)
    assert (paused.state, paused.result) == (PlanState.PAUSED, Result.ERROR)
    assert paused.history[-1].details == {"reason": "stop", "retrying": [2]}
    assert (paused.steps[2].attempts, paused.steps[2].retries) == (1, 1)

    clock = SignallingClock()
    with World(url, clock=clock) as restarted:
        (continued,) = restarted.auto_executed
        clock.wait_for_timers(1)  # the interrupted retry's backoff again, on the new clock
        assert clock.pending()[0].due == pytest.approx(600)  # retry 1, not one more
        clock.advance(600)
        clock.wait_for_timers(1)  # it failed again: retry 2, 600 * 2
        assert clock.pending()[0].due == pytest.approx(600 + 1200)
        clock.advance(1200)
        plan = continued.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert (plan.steps[2].attempts, plan.steps[2].retries) == (3, 2)


class SkipsAfterARetry(Action):
    """Optional: one retry, much later, then skipped."""

    rescue = Retry(1, backoff=600, then=Skip)

    def run(self) -> None:
        raise RuntimeError("optional, and down")


def test_a_restart_applies_a_skip_a_stop_interrupted(url: str) -> None:
    clock = SignallingClock()
    world = World(url, clock=clock).start()
    triggered = world.trigger(SkipsAfterARetry)
    clock.wait_for_timers(1)  # failed; its Skip comes once the retry fails too
    world.stop(TIMEOUT)
    paused = triggered.wait(TIMEOUT)
    assert paused.state == PlanState.PAUSED
    assert paused.history[-1].details == {"reason": "stop", "retrying": [2]}
    assert paused.steps[2].state == StepState.ERROR

    clock = SignallingClock()
    with World(url, clock=clock) as restarted:
        (continued,) = restarted.auto_executed
        clock.wait_for_timers(1)  # the interrupted retry, armed again
        clock.advance(60)
        # It fails again, and what comes after its last retry applies: Skip.
        plan = continued.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    assert plan.steps[2].state == StepState.SKIPPED
    assert (plan.steps[2].attempts, plan.steps[2].retries) == (2, 1)


def test_a_restart_names_the_plans_left_for_a_person(url: str) -> None:
    with World(url, auto_rescue=False) as world:
        paused = world.trigger(Breaks).wait(TIMEOUT)
    with capture_logs() as logs, World(url) as restarted:
        assert restarted.auto_executed == []
    lines = [line for line in logs if line["event"].startswith("plans paused for a person")]
    assert len(lines) == 1
    assert lines[0]["count"] == 1 and lines[0]["plan_ids"] == [paused.id]


def test_a_late_continue_leaves_a_plan_paused_for_a_person_since(url: str) -> None:
    # A world that continues interrupted plans (at its start, when another world left) holds
    # each plan as it read it: paused by a crash. By the time the executor takes that
    # continue, another continue may have run the plan and paused it for a person. Seen in
    # CI: the late continue ran the plan again, and a person's resume got AlreadyRunning.
    with World(url, auto_rescue=False) as world:
        paused = world.trigger(Breaks).wait(TIMEOUT)
        assert (paused.state, paused.pause_reason()) == (PlanState.PAUSED, "error")
        read_before = world.load(paused.id)
        at = max(i for i, e in enumerate(read_before.history) if e.name == "pause execution")
        crash = dataclasses.replace(read_before.history[at], details={"reason": "crash"})
        read_before.history[at] = crash  # as it read before that pause
        late = world._execute(paused.id, read_before, "continue").wait(TIMEOUT)
        assert late.history == paused.history  # nothing ran: no "start execution"
        assert world.load(paused.id).history == paused.history
        resumed = world.resume(paused.id).wait(TIMEOUT)  # a person's resume runs it
        assert resumed.history[-2].name == "start execution"


# -- stop(timeout) -----------------------------------------------------------------------


class Long(Action):
    release = threading.Event()
    started = threading.Event()

    def run(self) -> None:
        Long.started.set()
        Long.release.wait(TIMEOUT)


def test_stop_with_a_timeout_starts_nothing_more_and_says_what_was_left_running(
    url: str,
) -> None:
    Long.release.clear()
    Long.started.clear()
    world = World(url, pool_size=1).start()
    first = world.trigger(Long)
    assert Long.started.wait(TIMEOUT)
    queued = [world.trigger(Long) for _ in range(3)]  # waiting for the one worker
    try:
        left = world.stop(timeout=0.2)
    finally:
        Long.release.set()
    assert left == [(first.id, 2)]
    reader = World(url, executor=False)
    try:
        assert reader.load(first.id).steps[2].state == StepState.RUNNING
        for triggered in queued:
            stored = reader.load(triggered.id)
            assert stored.steps[2].state == StepState.PENDING  # never started
    finally:
        reader.stop()


# -- a commit that fails -----------------------------------------------------------------


class FirstOfTwo(Action):
    """Runs once the test has armed a fault on its success; retried once."""

    rescue = Retry(1, backoff=0.01)
    armed = threading.Event()

    def run(self) -> None:
        FirstOfTwo.armed.wait(TIMEOUT)
        self.output["runs"] = self.output.get("runs", 0) + 1


class SecondOfTwo(Action):
    def run(self) -> None:
        self.output["second"] = True


class TwoInARow(Action):
    def plan(self) -> None:
        with self.sequence():
            self.plan_action(FirstOfTwo)
            self.plan_action(SecondOfTwo)


def test_a_failed_commit_hands_the_plan_back_and_what_is_told_is_what_is_stored(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue: one failed commit followed by Retry left a plan stored stopped with a step
    still running while wait() had reported stopped/success."""
    fault = tmp_path / "fault.json"
    monkeypatch.setenv(FAULT_FILE, str(fault))
    FirstOfTwo.armed.clear()
    with World(sqlite_url) as world:
        triggered = world.trigger(TwoInARow)
        fault.write_text(json.dumps({"plan": triggered.id, "step": 3, "state": "success"}))
        FirstOfTwo.armed.set()  # its success will not commit (once)
        told = triggered.wait(TIMEOUT)
        stored = world.load(triggered.id)
    assert not fault.exists()  # the fault fired
    assert (told.state, told.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert (stored.state, stored.result) == (told.state, told.result)
    assert {sid: s.state for sid, s in stored.steps.items()} == {
        sid: s.state for sid, s in told.steps.items()
    }
    first = stored.steps[3]
    # Stored running when the commit failed: recovered as an abnormal termination, which
    # its Retry ran again.
    assert (first.state, first.attempts, first.retries) == (StepState.SUCCESS, 2, 1)
    assert "terminate execution" in [entry.name for entry in stored.history]
    assert stored.steps[5].state == StepState.SUCCESS
