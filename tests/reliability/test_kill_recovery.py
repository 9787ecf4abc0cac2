"""SIGKILL in the middle of work, restart on the same database: nothing committed is lost.

Acceptance criterion of the runtime: a process killed with SIGKILL in the middle of W1 (200
plans of 10 sequential no-op steps) and restarted on the same database ends with every plan
``stopped``/``success``, or ``paused`` with "Abnormal termination" (their steps' policy,
`Pause`) and then ``success`` after ``resume``; no committed output is lost; and only steps
whose code held a worker are abnormally terminated: at most the pool's size. The child is a
real process (`w1_worker`); the test synchronises only on the lines it prints.
"""

from __future__ import annotations

import os
import select
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Phase, PlanState, Result, StepState, World
from pydynflow.storage import Storage
from tests.reliability.child import running_child
from tests.reliability.kill_actions import STEPS_PER_CHAIN, Block, Chain

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
PLANS = 200
PROGRESS_AFTER = 300
ABNORMAL = "Abnormal termination (previous state: running)"
POOL_SIZE = 5  # the child's World's default pool_size

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _steps_never_block_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the child gets the variables that make `kill_actions` steps print and block."""
    for name in ("PYDYNFLOW_TEST_BLOCK", "PYDYNFLOW_TEST_PROGRESS_AFTER", "PYDYNFLOW_TEST_PACE"):
        monkeypatch.delenv(name, raising=False)


def child(mode: str, tmp_path: Path, **env: str) -> Any:
    """Run the `w1_worker` child in ``mode``; kill it on the way out."""
    return running_child("tests.reliability.w1_worker", mode, tmp_path, **env)


def snapshot(url: str) -> dict[str, Any]:
    """Read every plan straight from the store, as the killed process left it."""
    storage = Storage(url)
    try:
        return {plan.id: plan for plan in storage.find_plans(limit=None)}
    finally:
        storage.close()


def run_steps(plan: Any) -> list[Any]:
    return sorted((s for s in plan.steps.values() if s.phase == Phase.RUN), key=lambda s: s.id)


def abnormal_steps(plan: Any) -> list[Any]:
    return [
        s
        for s in plan.steps.values()
        if s.state == StepState.ERROR and s.error and "Abnormal termination" in s.error.message
    ]


def test_sigkill_in_the_middle_of_w1_loses_no_committed_output(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with child("w1", tmp_path, PYDYNFLOW_TEST_PROGRESS_AFTER=str(PROGRESS_AFTER)) as worker:
        worker.read_until(lambda line: line == "submitted")
        submitted = {line.split()[1] for line in worker.seen if line.startswith("plan ")}
        worker.read_until(lambda line: line == "progress")
        worker.sigkill()
    assert len(submitted) == PLANS

    before = snapshot(url)
    assert set(before) == submitted
    committed = {
        (plan.id, step.id): (step.output, step.started_at, step.ended_at)
        for plan in before.values()
        for step in run_steps(plan)
        if step.state == StepState.SUCCESS
    }
    # Step run #300 was under way: every plan's first step had started, and the second
    # steps of at least 100 plans, so at least 100 outputs are committed; W1 is unfinished.
    assert PROGRESS_AFTER - PLANS <= len(committed) < PLANS * STEPS_PER_CHAIN
    left_running = {
        (plan.id, step.id)
        for plan in before.values()
        for step in plan.steps.values()
        if step.state == StepState.RUNNING
    }
    assert left_running, "the kill left no step running"
    # Only steps whose code held one of the pool's workers were stored running.
    assert len(left_running) <= POOL_SIZE, sorted(left_running)
    states_before = sorted(str(plan.state) for plan in before.values())

    with World(url) as world:
        auto = {triggered.id: triggered for triggered in world.auto_executed}
        resumed = {}
        for plan_id, triggered in auto.items():
            finished = triggered.wait(TIMEOUT)
            if finished.state == PlanState.STOPPED:
                assert finished.result == Result.SUCCESS, plan_id
                continue
            # Continued: its abnormally terminated step got its policy (Pause).
            assert (finished.state, finished.result) == (PlanState.PAUSED, Result.ERROR), plan_id
            abnormal = abnormal_steps(finished)
            assert abnormal, f"{plan_id} paused without an abnormal termination"
            for step in abnormal:
                assert step.error.message == ABNORMAL
                assert (plan_id, step.id) in left_running
            resumed[plan_id] = world.resume(plan_id)
        stopped_at_restart = []
        for plan_id in sorted(submitted - set(auto)):
            plan = world.load(plan_id)
            assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan_id
            stopped_at_restart.append(plan_id)
        for plan_id, triggered in resumed.items():
            finished = triggered.wait(TIMEOUT)
            assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS), plan_id
        assert set(resumed) == {plan_id for plan_id, _ in left_running}

        after = {plan.id: plan for plan in world.plans(limit=None)}
    assert set(after) == submitted
    for plan in after.values():
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan.id
        steps = run_steps(plan)
        assert len(steps) == STEPS_PER_CHAIN
        assert [s.state for s in steps] == [StepState.SUCCESS] * STEPS_PER_CHAIN
        assert [s.output for s in steps] == [{"done": i} for i in range(STEPS_PER_CHAIN)]
    for (plan_id, step_id), (output, started_at, ended_at) in committed.items():
        step = after[plan_id].steps[step_id]
        assert step.state == StepState.SUCCESS
        # Unchanged, and not run again: the same output and the same times.
        assert (step.output, step.started_at, step.ended_at) == (output, started_at, ended_at)

    counts = {state: states_before.count(state) for state in sorted(set(states_before))}
    print(  # seen with -s: how the kill fell
        f"\nW1 kill: plans before restart {counts}, {len(committed)} outputs committed,"
        f" {len(left_running)} steps left running; at restart {len(auto)} continued,"
        f" {len(resumed)} paused (abnormal) then resumed, {len(stopped_at_restart)} stopped"
    )


def test_sigkill_while_a_step_runs_pauses_it_with_abnormal_termination(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with child("block", tmp_path, PYDYNFLOW_TEST_BLOCK="1") as worker:
        line = worker.read_until(lambda line: line.startswith("blocking "))
        _, plan_id, action_id = line.split()
        # The child's main thread prints "plan" then "writer", the step "blocking": the two
        # threads' lines come in either order.
        writers = [seen for seen in worker.seen if seen.startswith("writer ")]
        writer = (
            writers[0] if writers else worker.read_until(lambda seen: seen.startswith("writer "))
        )
        writer_pid = int(writer.split()[1])
        watch = os.pidfd_open(writer_pid)  # the writer is the killed process's child
        worker.sigkill()
    assert f"plan {plan_id}" in worker.seen
    # Its writer process exits with it: nothing can be committed after the world is gone.
    try:
        assert select.select([watch], [], [], TIMEOUT)[0], "the writer outlived its world"
    finally:
        os.close(watch)

    before = snapshot(url)[plan_id]
    assert before.state == PlanState.RUNNING
    (step,) = run_steps(before)
    assert step.action_id == int(action_id)
    assert step.state == StepState.RUNNING

    with World(url) as world:
        continued = {triggered.id: triggered for triggered in world.auto_executed}
        assert continued[plan_id].wait(TIMEOUT).state == PlanState.PAUSED  # its policy: Pause
        paused = world.load(plan_id)
        assert (paused.state, paused.result) == (PlanState.PAUSED, Result.ERROR)
        assert [(entry.name, entry.details) for entry in paused.history[-4:]] == [
            ("terminate execution", {"running": [step.id]}),
            ("pause execution", {"reason": "crash"}),
            ("start execution", None),  # continued: its step's policy applies
            ("pause execution", {"reason": "error"}),  # Pause: for a person
        ]
        failed = paused.steps[step.id]
        assert failed.state == StepState.ERROR
        assert failed.error is not None and failed.error.message == ABNORMAL

        finished = world.resume(plan_id).wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        done = world.load(plan_id).steps[step.id]
        assert done.state == StepState.SUCCESS and done.error is None
        assert done.input == {"block": True}
        assert done.output == {"ran": True}


def test_kill_actions_resolve_under_one_name() -> None:
    """Both processes store and resolve the classes as ``tests.reliability.kill_actions.*``."""
    for cls in (Chain, Block):
        assert cls.__module__ == "tests.reliability.kill_actions"
