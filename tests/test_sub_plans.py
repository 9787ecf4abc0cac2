"""Sub-plans (`WithSubPlans`, Dynflow v2): Dynflow's SUB-*, BATCH-*, V2-* and CC-* scenarios.

Each runs on an executor `World` (a SQLite file, and PostgreSQL when it is there); those
that need no waiting on suspended children run on `InThreadWorld` too. Counts are read
from the parent's stored output; concurrency from the sub-plans' recorded step times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pydynflow import ExecutionPlan, PlanState, World
from pydynflow.states import Phase, StepState
from pydynflow.testing import InThreadWorld
from tests.support import sub_plan_actions as fixtures
from tests.support.sub_plan_actions import (
    BulkParent,
    ChildAction,
    ClosedParent,
    LimitedParent,
    ParentAction,
)

TIMEOUT = 60
COUNTS = ("total_count", "success_count", "failed_count", "pending_count")


@pytest.fixture(autouse=True)
def _children_succeed() -> Iterator[None]:
    fixtures.fail_in.clear()
    yield
    fixtures.fail_in.clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[World]:
    """An executor world (auto_execute off: each test decides what runs)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    with World(url, auto_execute=False, pool_size=5) as opened:
        yield opened


@pytest.fixture(params=["World", "InThreadWorld"])
def any_world(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """An executor `World` on a SQLite file, or an `InThreadWorld`."""
    if request.param == "World":
        with World(f"sqlite:///{tmp_path / 'pydynflow.db'}", auto_execute=False) as opened:
            yield opened
    else:
        with InThreadWorld() as in_thread:
            yield in_thread


def counts(plan: ExecutionPlan) -> dict[str, Any]:
    """Return the parent's counts (its entry action's output, without the extras)."""
    output = plan.actions[1].output
    return {key: output.get(key) for key in COUNTS}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds (the plans run in other threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # another thread's progress, seen in the database (noqa: sleep-ok)


def run_step(plan: ExecutionPlan) -> Any:
    """Return the run step of the plan's root action."""
    return plan.steps[plan.actions[1].run_step_id]


# -- SUB: parent and children --------------------------------------------------------


def test_sub_plans_name_their_parent(any_world: Any) -> None:
    """SUB-01, SUB-02: the children's root actions name the parent; roots stay roots."""
    plan = any_world.trigger(ParentAction, 2).wait(TIMEOUT)
    assert (plan.state, plan.result) == ("stopped", "success")
    parent = any_world.load(plan.id)
    children = parent.sub_plans()
    assert len(children) == 2
    for child in children:
        root = child.actions[child.root_action_id]
        assert root.action_class is ChildAction
        assert (root.caller_execution_plan_id, root.caller_action_id) == (plan.id, 1)
        assert child.caller == (plan.id, 1)
        others = [a for a in child.actions.values() if a.id != child.root_action_id]
        assert others and all(a.caller_execution_plan_id is None for a in others)
    assert parent.root_action_id == 1 and parent.caller is None


def test_the_parent_counts_its_sub_plans(any_world: Any) -> None:
    """SUB-03: the entry output holds the counts."""
    plan = any_world.trigger(ParentAction, 2).wait(TIMEOUT)
    assert counts(any_world.load(plan.id)) == {
        "total_count": 2,
        "success_count": 2,
        "failed_count": 0,
        "pending_count": 0,
    }
    assert plan.actions[1].output["planned_count"] == 2


def test_a_parent_runs_in_the_world_s_process_under_the_process_executor(
    sqlite_url: str,
) -> None:
    """With ``executor="processes"`` the children's steps run in worker processes, while
    the parent's run step, which triggers them through the world, runs on a thread of the
    world's process (it used to fail: no world in a worker process)."""
    with World(sqlite_url, executor="processes", pool_size=2, auto_execute=False) as world:
        plan = world.trigger(ParentAction, 7).wait(TIMEOUT)
        assert (plan.state, plan.result) == ("stopped", "success"), run_step(plan).error
        assert counts(world.load(plan.id))["success_count"] == 7
        children = world.load(plan.id).sub_plans()
        assert len(children) == 7
        assert all(child.result == "success" for child in children)


def test_a_failing_child_fails_the_parent(any_world: Any) -> None:
    """SUB-04: children failing in run fail the parent (paused/error), counted as failed."""
    fixtures.fail_in.add("run")
    plan = any_world.trigger(ParentAction, 2).wait(TIMEOUT)
    plan = any_world.load(plan.id)
    assert (plan.state, plan.result) == ("paused", "error")
    assert counts(plan) == {
        "total_count": 2,
        "success_count": 0,
        "failed_count": 2,
        "pending_count": 0,
    }
    assert run_step(plan).error.message == "A sub task failed"
    assert {child.state for child in plan.sub_plans()} == {"paused"}


def test_resume_after_every_child_failed_in_plan_creates_them_again(any_world: Any) -> None:
    """SUB-06 (and BATCH-02 the v2 way): nothing was planned, so resume starts over."""
    fixtures.fail_in.add("plan")
    plan = any_world.trigger(ParentAction, 7).wait(TIMEOUT)
    plan = any_world.load(plan.id)
    assert (plan.state, plan.result) == ("paused", "error")
    assert counts(plan)["failed_count"] == 7
    assert {(c.state, c.result) for c in plan.sub_plans()} == {("stopped", "error")}

    fixtures.fail_in.clear()
    resumed = any_world.resume(plan.id).wait(TIMEOUT)
    resumed = any_world.load(plan.id)
    assert (resumed.state, resumed.result) == ("stopped", "success")
    assert counts(resumed) == {
        "total_count": 7,
        "success_count": 7,
        "failed_count": 0,
        "pending_count": 0,
    }
    assert resumed.actions[1].output["resumed_count"] == 7
    assert len(resumed.sub_plans()) == 14  # the failed ones stay, for the record


def test_resume_succeeds_only_once_every_child_finished(world: World) -> None:
    """SUB-07: resuming the parent while children are still paused pauses it again."""
    fixtures.fail_in.add("run")
    plan = world.trigger(ParentAction, 2).wait(TIMEOUT)
    assert (plan.state, plan.result) == ("paused", "error")
    fixtures.fail_in.clear()

    again = world.resume(plan.id).wait(TIMEOUT)
    assert (again.state, again.result) == ("paused", "error")
    assert len(world.load(plan.id).sub_plans()) == 2  # not created again

    first, second = world.load(plan.id).sub_plans()
    assert world.resume(first.id).wait(TIMEOUT).state == "stopped"
    again = world.resume(plan.id).wait(TIMEOUT)
    assert (again.state, again.result) == ("paused", "error")
    assert counts(world.load(plan.id))["success_count"] == 1

    assert world.resume(second.id).wait(TIMEOUT).state == "stopped"
    done = world.resume(plan.id).wait(TIMEOUT)
    assert (done.state, done.result) == ("stopped", "success")
    assert counts(world.load(plan.id))["success_count"] == 2


def _suspended_children(world: World, plan_id: str, count: int) -> list[ExecutionPlan]:
    def all_suspended() -> bool:
        children = world.load(plan_id).sub_plans()
        return len(children) == count and all(
            run_step(child).state == StepState.SUSPENDED for child in children
        )

    wait_for(all_suspended, f"{count} suspended sub-plans")
    return world.load(plan_id).sub_plans()


@pytest.mark.parametrize("force", [False, True], ids=["cancel", "abort"])
def test_cancel_of_the_parent_passes_to_its_children(world: World, force: bool) -> None:
    """SUB-08, SUB-09: Cancel (Abort) reaches the suspended children, which succeed."""
    triggered = world.trigger(ParentAction, 2, True)
    _suspended_children(world, triggered.id, 2)
    assert world.cancel(triggered.id, force=force) == 1  # the parent's run step
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == ("stopped", "success")
    for child in world.load(plan.id).sub_plans():
        output = child.actions[child.root_action_id].output
        assert output.get("aborted" if force else "cancelled") is True
        assert (child.state, child.result) == ("stopped", "success")


def test_cancel_before_all_were_created_counts_the_rest_cancelled(world: World) -> None:
    """CC-03: with room for none, a cancel stops the parent: nothing ever ran."""
    triggered = world.trigger(ClosedParent, 5)

    def parked() -> bool:
        step = run_step(world.load(triggered.id))
        return step.state == StepState.SUSPENDED

    wait_for(parked, "the parent to wait")
    assert world.cancel(triggered.id) == 1
    plan = triggered.wait(TIMEOUT)
    plan = world.load(plan.id)
    assert (plan.state, plan.result) == ("paused", "error")
    output = plan.actions[1].output
    assert output["cancelled_count"] == 5 and output["planned_count"] == 0
    assert plan.sub_plans() == []


# -- BATCH and V2: batches and the concurrency limit -----------------------------------


def test_sub_plans_are_created_in_batches(any_world: Any) -> None:
    """BATCH-01, V2-02: 20 children in batches of 5 take 4 batches."""
    plan = any_world.trigger(ParentAction, 20).wait(TIMEOUT)
    plan = any_world.load(plan.id)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert plan.actions[1].output["batch_count"] == 4
    assert counts(plan)["success_count"] == 20
    assert sorted(c.actions[c.root_action_id].input["index"] for c in plan.sub_plans()) == list(
        range(20)
    )


def test_batches_depend_only_on_the_total_and_the_planned_count(any_world: Any) -> None:
    """BATCH-03: after completion no batch is left, whatever the other counts say."""
    plan = any_world.load(any_world.trigger(ParentAction, 10).wait(TIMEOUT).id)
    action = ParentAction.from_record(plan.actions[1], phase=Phase.RUN)
    assert action.can_spawn_next_batch() is False
    assert action.current_batch() == []
    action.output["pending_count"] = 0
    action.output["success_count"] = 5
    assert action.can_spawn_next_batch() is False
    assert action.current_batch() == []


def test_no_children_finish_the_parent_at_once(any_world: Any) -> None:
    """SUB-14 and V2's empty case: a total of 0 succeeds with zero counts."""
    plan = any_world.load(any_world.trigger(ParentAction, 0).wait(TIMEOUT).id)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert counts(plan) == dict.fromkeys(COUNTS, 0)


def _overlap(plan: ExecutionPlan) -> int:
    """Return the most sub-plans whose run steps ran at one moment (from stored times)."""
    moments = []
    for child in plan.sub_plans():
        step = run_step(child)
        moments += [(step.started_at, 1), (step.ended_at, -1)]
    running = most = 0
    for _, change in sorted(moments, key=lambda moment: (moment[0], moment[1])):
        running += change
        most = max(most, running)
    return most


def test_the_concurrency_limit_holds(world: World) -> None:
    """CC-02, V2-04: 10 children with a limit of 4: never more than 4 run at once."""
    plan = world.trigger(LimitedParent, 10).wait(TIMEOUT)
    plan = world.load(plan.id)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert counts(plan)["success_count"] == 10
    assert 1 <= _overlap(plan) <= 4


def test_a_bulk_parent_with_a_limit_completes(world: World) -> None:
    """The issue's shape at a test's size: 300 sub-plans, batches of 100, limit 20."""
    plan = world.trigger(BulkParent, 300, 100, 20).wait(TIMEOUT * 2)
    plan = world.load(plan.id)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert counts(plan) == {
        "total_count": 300,
        "success_count": 300,
        "failed_count": 0,
        "pending_count": 0,
    }
    assert len(plan.sub_plans()) == 300
    assert _overlap(plan) <= 20
    assert plan.state == PlanState.STOPPED
    assert run_step(plan).progress_done == 1.0


# -- a kill -9 in the middle ------------------------------------------------------------


@pytest.mark.slow
def test_the_parent_s_counts_are_right_after_a_kill_and_a_restart(tmp_path: Any) -> None:
    """The issue's kill: a parent with 200 sub-plans (batches of 20, limit 5) killed -9
    after 60 stopped; the next process continues it: every sub-plan created once, all
    counted, the parent ``stopped``/``success``."""
    from pydynflow.storage import Storage
    from tests.reliability.child import running_child

    env = {"PYDYNFLOW_TEST_SUB_PLANS": "200", "PYDYNFLOW_TEST_PROGRESS_AFTER": "60"}
    with running_child("tests.reliability.sub_plans_worker", "bulk", tmp_path, **env) as worker:
        worker.read_until(lambda line: line == "progress")
        worker.sigkill()
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with Storage(url) as storage:
        (parent,) = [plan for plan in storage.find_plans(limit=None) if plan.caller is None]
        killed_at = storage.count_plans(caller_execution_plan_id=parent.id, state="stopped")
    assert 60 <= killed_at < 200, killed_at

    with running_child("tests.reliability.sub_plans_worker", "bulk", tmp_path, **env) as worker:
        assert worker.read_until(lambda line: line.startswith("done")) == "done stopped success"

    with Storage(url) as storage:
        plan = storage.load_plan(parent.id)
        children = storage.find_plans(caller_execution_plan_id=parent.id, limit=None)
    assert counts(plan) == {
        "total_count": 200,
        "success_count": 200,
        "failed_count": 0,
        "pending_count": 0,
    }
    assert plan.actions[1].output["planned_count"] == 200
    indexes = sorted(c.actions[c.root_action_id].input["index"] for c in children)
    assert indexes == list(range(200))  # each created once
    assert {(c.state, c.result) for c in children} == {("stopped", "success")}


def test_the_parent_polls_every_polling_interval_while_children_wait() -> None:
    """V2-01, SUB-13: one poll armed at now + 15 s, re-armed when it fires; the parent
    still waits while its children are suspended, and finishes once they are cancelled."""
    with InThreadWorld(auto_advance=False) as world:
        triggered = world.trigger(ParentAction, 2, True)
        start = world.clock.now()
        assert [timer.due - start for timer in world.clock.pending()] == [15.0]
        world.clock.advance(15.0)
        assert [timer.due - start for timer in world.clock.pending()] == [30.0]
        plan = world.load(triggered.id)
        assert run_step(plan).state == StepState.SUSPENDED
        assert counts(plan)["pending_count"] == 2
        assert world.cancel(triggered.id) == 1
        plan = world.load(triggered.id)
        assert (plan.state, plan.result) == ("stopped", "success")
        assert world.clock.pending() == []  # the step ended: its poll went with it
