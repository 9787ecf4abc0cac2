"""Kill -9 and restart, again and again: what a restart decides, and what a kill leaves.

A real child process (`restart_worker`) runs an executor world; the test kills it at points
it learns from the lines the child prints, reads what the database holds, and starts the
next child on the same file, which recovers the plans and continues them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Phase, PlanState, Result, StepState
from pydynflow.storage import Storage
from tests.reliability.child import running_child

TIMEOUT = 60
POOL_SIZE = 5  # restart_worker's World(pool_size=5)

pytestmark = pytest.mark.slow


def plans_in(path: Path) -> dict[str, Any]:
    """Read every plan straight from the store, as the killed process left it."""
    with Storage(f"sqlite:///{path}") as storage:
        return {plan.id: plan for plan in storage.find_plans(limit=None)}


def ledger_spans(ledger: Path) -> dict[tuple[str, int], list[tuple[str, float, float | None]]]:
    """Return each step's runs from the effects ledger: (pid, start, end or None)."""
    spans: dict[tuple[str, int], list[tuple[str, float, float | None]]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        plan_id, step_id, pid, what, moment = line.split()
        runs = spans[(plan_id, int(step_id))]
        if what == "start":
            runs.append((pid, float(moment), None))
        else:
            index = max(i for i, run in enumerate(runs) if run[0] == pid and run[2] is None)
            runs[index] = (pid, runs[index][1], float(moment))
    return spans


def test_a_crash_loop_terminates_at_most_the_pool_and_retry_finishes_the_job(
    tmp_path: Path,
) -> None:
    """Issue: 200 plans x 5 steps, pool_size=5, six kills left 154 plans paused with
    "Abnormal termination" though at most 5 steps per kill ran. Here at a smaller size."""
    db, ledger = tmp_path / "pydynflow.db", tmp_path / "effects.log"
    env = {
        "PYDYNFLOW_TEST_PLANS": "40",
        "PYDYNFLOW_TEST_PACE": "0.01",
        "PYDYNFLOW_TEST_LEDGER": str(ledger),
    }
    abnormal_per_kill = []
    for kill in range(3):
        progress = {"PYDYNFLOW_TEST_PROGRESS_AFTER": str(12 + 7 * kill)}
        with running_child(
            "tests.reliability.restart_worker", "five", tmp_path, **env, **progress
        ) as worker:
            worker.read_until(lambda line: line == "progress")
            worker.sigkill()
        stored = plans_in(db)
        running = [
            (plan.id, step.id)
            for plan in stored.values()
            for step in plan.steps.values()
            if step.state == StepState.RUNNING
        ]
        abnormal_per_kill.append(len(running))
        # Only steps whose code held one of the pool's workers are stored running.
        assert 1 <= len(running) <= POOL_SIZE, running

    with running_child("tests.reliability.restart_worker", "five", tmp_path, **env) as worker:
        worker.read_until(lambda line: line == "done", timeout=TIMEOUT * 2)
        assert worker.proc.wait(TIMEOUT) == 0

    final = plans_in(db)
    assert len(final) == 40
    for plan in final.values():
        # An abnormal termination is a failure like any other: Retry ran the step again.
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan.id
        outputs = [step.output for step in plan.steps_of_phase(Phase.RUN)]
        assert outputs == [{"done": i} for i in range(5)], plan.id
    spans = ledger_spans(ledger)
    assert len(spans) == 40 * 5
    for (plan_id, step_id), runs in spans.items():
        finished = [run for run in runs if run[2] is not None]
        assert finished, (plan_id, step_id)
        # Never two runs of one step at the same time.
        ordered = sorted(runs, key=lambda run: run[1])
        for before, after in zip(ordered, ordered[1:], strict=False):
            assert before[2] is None or before[2] <= after[1], (plan_id, step_id, runs)
    print(f"\nabnormal terminations per kill: {abnormal_per_kill}")


def test_a_plan_that_keeps_killing_its_world_is_paused_after_max_recoveries(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pydynflow.db"
    crashes = 0
    for _ in range(3):
        with running_child("tests.reliability.restart_worker", "poison", tmp_path) as worker:
            worker.read_until(lambda line: line == "poison")
            assert worker.proc.wait(TIMEOUT) == -9  # the step killed its own world
            crashes += 1
    with running_child("tests.reliability.restart_worker", "poison", tmp_path) as worker:
        worker.read_until(lambda line: line.startswith("continued "))
        assert worker.seen[-1] == "continued 0"  # not continued: paused for a person
        worker.read_until(lambda line: line == "done")
        assert "poison" not in worker.seen
    (plan,) = plans_in(db).values()
    assert crashes == 3
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert plan.history[-1].name == "pause execution"
    assert plan.history[-1].details["reason"] == "recoveries"
    assert "max_recoveries=3" in plan.history[-1].details["message"]
    terminations = [entry for entry in plan.history if entry.name == "terminate execution"]
    assert [entry.details for entry in terminations] == [{"running": [2]}] * 3
    step = plan.steps[2]
    assert step.state == StepState.ERROR and "max_recoveries=3" in step.error.message


def test_a_kill_during_finalize_does_not_run_the_run_step_again(tmp_path: Path) -> None:
    db, ledger = tmp_path / "pydynflow.db", tmp_path / "effects.log"
    env = {"PYDYNFLOW_TEST_LEDGER": str(ledger)}
    with running_child(
        "tests.reliability.restart_worker",
        "finalize",
        tmp_path,
        **env,
        PYDYNFLOW_TEST_BLOCK_FINALIZE="1",
    ) as worker:
        worker.read_until(lambda line: line == "finalizing")
        worker.sigkill()
    (plan,) = plans_in(db).values()
    assert plan.state == PlanState.RUNNING
    run_step = plan.steps[2]
    assert run_step.state == StepState.SUCCESS  # committed before the finalize phase ran
    assert plan.steps[3].state == StepState.PENDING  # the finalize phase never committed

    with running_child("tests.reliability.restart_worker", "finalize", tmp_path, **env) as worker:
        worker.read_until(lambda line: line == "done")
    (plan,) = plans_in(db).values()
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert ledger.read_text().splitlines() == [f"run {plan.id}", f"finalize {plan.id}"]
