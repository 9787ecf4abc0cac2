"""EXEC-* scenarios (no events, halt or rescue) and the runtime's promises, on a real world."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, DynflowError, PlanState, Result, StepState, World
from pydynflow.actors.executor import ExecutorActor
from tests.support import code_workflow as ex
from tests.support.code_workflow import ISSUES, IncomingIssue, IncomingIssues

TIMEOUT = 30


@pytest.fixture(autouse=True)
def _clean_logs() -> Iterator[None]:
    ex.RUN_LOG.clear()
    ex.FINALIZE_LOG.clear()
    ex.PAUSE.reached.clear()
    ex.PAUSE.release.clear()
    yield
    ex.PAUSE.release.set()


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    """Dynflow's test world: no auto rescue or execute, queues default (5) and slow (1)."""
    with World(sqlite_url, auto_rescue=False, auto_execute=False, queues={"slow": 1}) as started:
        yield started


def trolling_issues() -> list[dict[str, str]]:
    return [ISSUES[0], {"author": "John Doe", "text": "trolling"}]


def test_exec01_planned_then_stopped(world: World) -> None:
    plan = world.plan(IncomingIssues, ISSUES)
    assert plan.state == PlanState.PLANNED
    finished = world.execute(plan.id).wait(TIMEOUT)
    assert finished.state == PlanState.STOPPED and finished.result == Result.SUCCESS
    assert [entry.name for entry in finished.history] == ["start execution", "finish execution"]
    assert world.load(plan.id) == finished


def test_exec02_failure_pauses(world: World) -> None:
    plan = world.plan(IncomingIssues, trolling_issues())
    finished = world.execute(plan.id).wait(TIMEOUT)
    assert finished.state == PlanState.PAUSED and finished.result == Result.ERROR
    assert finished.steps[13].state == StepState.ERROR
    assert finished.steps[13].error.message == "Trolling detected"
    assert finished.steps[16].state == StepState.PENDING  # its sequence stopped
    assert finished.steps[9].state == StepState.SUCCESS  # the sibling branch went on
    again = world.execute(plan.id).wait(TIMEOUT)
    assert again.state == PlanState.PAUSED and again.result == Result.ERROR
    assert ex.FINALIZE_LOG == []  # EXEC-08: no finalize when the run flow failed


def test_exec03_exec04_running_state_and_double_execute(world: World) -> None:
    plan = world.plan(IncomingIssue, {"author": "Neo", "text": "get a break"})
    triggered = world.execute(plan.id)
    assert ex.PAUSE.reached.wait(TIMEOUT)
    loaded = world.load(plan.id)
    assert loaded.state == PlanState.RUNNING
    triage_run = loaded.actions[loaded.steps[3].action_id].run_step_id
    assert loaded.steps[triage_run].state == StepState.RUNNING
    with pytest.raises(DynflowError, match="already running"):
        world.execute(plan.id).wait(TIMEOUT)
    ex.PAUSE.release.set()
    assert triggered.wait(TIMEOUT).state == PlanState.STOPPED


def test_exec06_exec07_outputs_resolved_inputs_and_finalize(world: World) -> None:
    plan = world.plan(IncomingIssues, ISSUES)
    world.execute(plan.id).wait(TIMEOUT)
    loaded = world.load(plan.id)
    classification = {"assignee": "John Doe", "severity": "medium"}
    assert all(loaded.steps[i].state == StepState.SUCCESS for i in (4, 7, 9, 13, 16, 18))
    assert loaded.steps[4].output == {"classification": classification}
    assert loaded.steps[7].input == {
        "author": "Peter Smith",
        "text": "Failing test",
        "assignee": "John Doe",
        "severity": "medium",
    }
    assert loaded.steps[7].output == {}
    assert loaded.steps[9].input == {"triage": {"classification": classification}}
    assert loaded.steps[16].input["text"] == "Internal server error"
    assert ("IncomingIssues", {"issues": ISSUES}) in ex.FINALIZE_LOG
    assert ("Triage", {"author": "Peter Smith", "text": "Failing test"}) in ex.FINALIZE_LOG
    assert [name for name, _ in ex.FINALIZE_LOG] == [
        "Triage",
        "NotifyAssignee",
        "Triage",
        "NotifyAssignee",
        "IncomingIssues",
    ]


def test_exec09_resume_after_fixing_input(world: World) -> None:
    plan = world.plan(IncomingIssues, trolling_issues())
    world.execute(plan.id).wait(TIMEOUT)
    paused = world.load(plan.id)
    record = paused.actions[paused.steps[13].action_id]
    record.input["text"] = "ok"
    world.storage.save_actions([record])
    ex.RUN_LOG.clear()
    ex.FINALIZE_LOG.clear()
    finished = world.resume(plan.id).wait(TIMEOUT)
    assert finished.state == PlanState.STOPPED and finished.result == Result.SUCCESS
    assert [name for name, _ in ex.RUN_LOG] == ["Triage"]
    loaded = world.load(plan.id)
    assert loaded.steps[13].input["text"] == "ok"
    assert loaded.steps[16].input["text"] == "trolling"  # a literal copied at plan time
    assert loaded.steps[16].input["assignee"] == "John Doe"  # resolved now
    assert all(step.state == StepState.SUCCESS for step in loaded.steps.values())
    assert [entry.name for entry in loaded.history] == [
        "start execution",
        "pause execution",
        "resume",  # an operator action: who asked, from where
        "start execution",
        "finish execution",
    ]
    assert loaded.history[1].details == {"reason": "error"}
    assert loaded.history[2].details["call"] == "resume"


def test_exec11_skip_and_resume(world: World) -> None:
    plan = world.plan(IncomingIssues, trolling_issues())
    world.execute(plan.id).wait(TIMEOUT)
    world.skip(plan.id, 13)
    ex.RUN_LOG.clear()
    finished = world.resume(plan.id).wait(TIMEOUT)
    assert finished.state == PlanState.STOPPED and finished.result == Result.WARNING
    assert [name for name, _ in ex.RUN_LOG] == []
    loaded = world.load(plan.id)
    states = {i: loaded.steps[i].state for i in (4, 7, 9, 13, 16, 18, 5, 10, 14, 19, 20)}
    assert states == {
        4: "success",
        7: "success",
        9: "success",
        13: "skipped",
        16: "skipped",
        18: "skipped",
        5: "success",
        10: "success",
        14: "skipped",
        19: "skipped",
        20: "success",
    }
    assert loaded.steps[13].output == {}
    assert loaded.steps[16].input["assignee"].step_id == 13  # still the unresolved reference


def test_skip_needs_a_paused_plan_and_a_failed_step(world: World) -> None:
    plan = world.plan(IncomingIssues, ISSUES)
    with pytest.raises(DynflowError, match="has to be paused"):
        world.skip(plan.id, 4)
    world.execute(plan.id).wait(TIMEOUT)


class DeletesWhatItReads(World):
    """A world whose every read of a plan to change is followed by that plan's deletion by
    someone else (retention with ``include_paused``), before the change is written."""

    def _stored(self, plan_id: str) -> Any:
        plan = super()._stored(plan_id)
        assert self.storage.delete_plans([plan_id]) == 1
        return plan


def test_a_skip_racing_a_deletion_writes_nothing(sqlite_url: str) -> None:
    """The plan was deleted between the skip's read and its write: the skip fails and
    writes nothing (it used to write the plan's row back, half a plan)."""
    with World(sqlite_url, auto_execute=False) as world:
        plan = world.plan(IncomingIssues, trolling_issues())
        assert world.execute(plan.id).wait(TIMEOUT).state == PlanState.PAUSED
    with DeletesWhatItReads(sqlite_url, auto_execute=False) as racing:
        with pytest.raises(DynflowError, match="no longer paused, or was deleted"):
            racing.skip(plan.id, 13)
        db = racing.storage.database
        assert not racing.storage.plan_exists(plan.id)
        (steps,) = db.execute_sql(
            f"SELECT count(*) FROM dynflow_steps WHERE execution_plan_uuid = {db.param}",
            (plan.id,),
        ).fetchone()
        assert steps == 0


def test_exec12_empty_flows(world: World) -> None:
    plan = world.plan(ex.Dummy, {"text": "dummy"})
    assert plan.run_flow.size() == 0 and plan.finalize_flow.size() == 0
    finished = world.execute(plan.id).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    with pytest.raises(DynflowError, match="stopped"):
        world.execute(plan.id).wait(TIMEOUT)


def test_exec13_finalize_only(world: World) -> None:
    plan = world.plan(ex.DummyWithFinalize, {})
    assert plan.run_flow.size() == 0 and plan.finalize_flow.size() == 1
    finished = world.execute(plan.id).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert [name for name, _ in ex.FINALIZE_LOG] == ["DummyWithFinalize"]


class FinalizeFails(Action):
    calls: list[str] = []

    def plan(self, fail: bool) -> None:
        self.plan_self({"fail": fail})

    def run(self) -> None:
        FinalizeFails.calls.append("run")

    def finalize(self) -> None:
        FinalizeFails.calls.append("finalize")
        if self.input["fail"] and FinalizeFails.calls.count("finalize") == 1:
            raise RuntimeError("finalize trouble")


def test_finalize_failure_pauses_and_resume_reruns_finalize(world: World) -> None:
    FinalizeFails.calls.clear()
    plan = world.plan(FinalizeFails, True)
    paused = world.execute(plan.id).wait(TIMEOUT)
    assert (paused.state, paused.result) == (PlanState.PAUSED, Result.ERROR)
    assert paused.steps[3].error.message == "finalize trouble"
    finished = world.resume(plan.id).wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert FinalizeFails.calls == ["run", "finalize", "finalize"]  # run is not repeated


class Barrier(Action):
    """Two of these in concurrence meet at a barrier: sequential execution would deadlock."""

    barrier = threading.Barrier(2)

    def run(self) -> None:
        self.output["waited"] = Barrier.barrier.wait(timeout=TIMEOUT) >= 0


class TwoBranches(Action):
    def plan(self) -> None:
        with self.concurrence():
            self.plan_action(Barrier, {"branch": 1})
            self.plan_action(Barrier, {"branch": 2})


def test_concurrence_branches_run_at_the_same_time(world: World) -> None:
    Barrier.barrier.reset()
    finished = world.trigger(TwoBranches).wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert all(s.output == {"waited": True} for s in finished.steps.values() if s.phase == "run")


class NoOp(Action):
    def run(self) -> None:
        self.output["ok"] = True


class ThreeSteps(Action):
    def plan(self, n: int) -> None:
        with self.sequence():
            for index in range(3):
                self.plan_action(NoOp, {"index": index, "n": n})


def test_thousand_plans_at_once_with_bounded_threads(world: World) -> None:
    before = set(threading.enumerate())  # the world's, and any other tests may leave ending

    def added() -> int:
        return len(set(threading.enumerate()) - before)

    peak = [0]
    triggered = [world.trigger(ThreeSteps, n) for n in range(1000)]
    peak.append(added())
    finished = [t.wait(TIMEOUT * 4) for t in triggered]
    peak.append(added())
    assert all(plan.result == Result.SUCCESS for plan in finished)
    assert max(peak) <= world.pool_size + 8, peak  # its lazy threads, not one per plan
    assert world.plans(state="stopped", limit=None).__len__() == 1000


class Sluggish(Action):
    queue = "slow"
    started = threading.Event()
    release = threading.Event()

    def run(self) -> None:
        Sluggish.started.set()
        Sluggish.release.wait(TIMEOUT)
        self.output["done"] = True


class SluggishThenMore(Action):
    def plan(self) -> None:
        with self.sequence():
            self.plan_action(Sluggish, {})
            self.plan_action(NoOp, {})


def test_stop_waits_for_running_steps_and_pauses_the_plan(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe (not replace) the executor taking the stop: its supervisors have been told to
    # wind down before the running step may return, else the step after it could start.
    terminated = threading.Event()
    terminate = ExecutorActor._terminate

    def observed(self: ExecutorActor, future: Any) -> None:
        terminate(self, future)
        terminated.set()

    monkeypatch.setattr(ExecutorActor, "_terminate", observed)
    Sluggish.started.clear()
    Sluggish.release.clear()
    world = World(sqlite_url, auto_execute=False, queues={"slow": 1}).start()
    triggered = world.trigger(SluggishThenMore)
    assert Sluggish.started.wait(TIMEOUT)
    stopper = threading.Thread(target=world.stop, args=(TIMEOUT,))
    stopper.start()
    assert terminated.wait(TIMEOUT)
    Sluggish.release.set()
    stopper.join(TIMEOUT)
    paused = triggered.wait(TIMEOUT)
    assert paused.state == PlanState.PAUSED and paused.result == Result.PENDING
    assert paused.steps[3].state == StepState.SUCCESS  # the running step finished
    assert paused.steps[5].state == StepState.PENDING  # nothing new was started
    world.stop()  # idempotent
    with World(sqlite_url, queues={"slow": 1}) as again:  # auto_execute picks it up
        assert [t.id for t in again.auto_executed] == [paused.id]
        finished = again.auto_executed[0].wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert finished.steps[3].output == {"done": True}


def test_trigger_reports_planning_failure(world: World) -> None:
    class Broken(Action):
        def plan(self) -> None:
            raise RuntimeError("I failed")

    triggered = world.trigger(Broken)
    assert not triggered.planned
    assert triggered.error.message == "I failed"
    assert triggered.wait(TIMEOUT).state == PlanState.STOPPED


def test_client_world_cannot_execute_without_a_live_executor(sqlite_url: str) -> None:
    with World(sqlite_url, executor=False, create=True) as client:
        plan = client.plan(ex.Dummy)
        with pytest.raises(DynflowError, match="no executor world is alive"):
            client.execute(plan.id)
        assert client.load(plan.id).state == "planned"  # nothing was sent


class AsyncStep(Action):
    async def run(self, event: Any = None) -> None:
        import asyncio

        await asyncio.sleep(0)
        self.output["thread"] = threading.current_thread().name


def test_async_run_runs_on_the_world_loop(world: World) -> None:
    finished = world.trigger(AsyncStep, {}).wait(TIMEOUT)
    assert finished.result == Result.SUCCESS
    assert finished.steps[2].output["thread"] == "pydynflow-asyncio"
