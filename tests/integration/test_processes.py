"""executor="processes": user code in supervised worker processes, deaths under Retry."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydynflow import PlanState, Result, StepState, World
from tests.support import code_workflow as ex
from tests.support.dying import Dies, FiveSteps, WorkerPid

TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with World(sqlite_url, executor="processes", pool_size=2, auto_execute=False) as started:
        yield started


def test_user_code_runs_in_worker_processes(world: World) -> None:
    plan = world.trigger(ex.IncomingIssues, ex.ISSUES).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    pid = world.trigger(WorkerPid, {}).wait(TIMEOUT).steps[2].output["pid"]
    assert pid != os.getpid()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("exception", "RuntimeError: plain failure"),
        ("exit", "died with exit code 3"),
        ("sigkill", "killed by signal SIGKILL (9)"),
        ("segfault", "killed by signal SIGSEGV (11)"),
    ],
)
def test_each_way_of_dying_under_retry_2_then_pause(world: World, how: str, message: str) -> None:
    plan = world.trigger(Dies, {"how": how}).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    step = plan.steps[2]
    assert (step.attempts, step.retries) == (3, 2)  # its first run, its 2 retries, then Pause
    assert message in str(step.error)
    assert world._runtime.pools["default"].wait_for_workers(TIMEOUT)  # each death replaced


@pytest.mark.parametrize("how", ["exit", "sigkill", "segfault"])
def test_dying_once_is_retried_to_success(world: World, tmp_path: Path, how: str) -> None:
    marker = tmp_path / f"{how}.died"
    plan = world.trigger(Dies, {"how": how, "once": str(marker)}).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.steps[2].attempts == 2 and marker.exists()


def test_hundred_plans_with_five_percent_of_steps_killing_their_worker(
    world: World, tmp_path: Path
) -> None:
    rng = random.Random(7)
    cells = rng.sample(range(500), 25)  # 5 % of 100 plans x 5 steps
    kills: dict[int, list[int]] = {}
    for cell in cells:
        kills.setdefault(cell // 5, []).append(cell % 5)
    markers = tmp_path / "markers"
    markers.mkdir()
    triggered = [world.trigger(FiveSteps, n, kills.get(n, []), str(markers)) for n in range(100)]
    plans = [one.wait(TIMEOUT) for one in triggered]
    assert all((p.state, p.result) == (PlanState.STOPPED, Result.SUCCESS) for p in plans)
    # Each of the 500 run steps ran once, and the 25 killed ones once more.
    assert sum(step.attempts for p in plans for step in p.steps.values()) == 500 + 25
    assert len(list(markers.iterdir())) == 25
    pool = world._runtime.pools["default"]
    assert pool.wait_for_workers(TIMEOUT) and pool.workers == world.pool_size


def test_a_step_killing_its_worker_every_time_while_others_complete(world: World) -> None:
    doomed = world.trigger(Dies, {"how": "sigkill"})
    others = [world.trigger(ex.IncomingIssues, ex.ISSUES) for _ in range(20)]
    failures = [
        [(step.id, str(step.error)) for step in plan.steps.values() if step.error]
        for plan in (one.wait(TIMEOUT) for one in others)
        if plan.result != Result.SUCCESS
    ]
    assert not failures
    plan = doomed.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert plan.steps[2].state == StepState.ERROR and plan.steps[2].attempts == 3
    assert "SIGKILL" in plan.steps[2].error.message


def test_actions_defined_in_main_work(tmp_path: Path) -> None:
    script = tmp_path / "main_actions.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            from pydynflow import Action, World

            class Double(Action):
                def run(self):
                    self.output["value"] = self.input["value"] * 2
                    self.output["pid"] = os.getpid()

            if __name__ == "__main__":
                url = "sqlite:///{tmp_path / "main.db"}"
                with World(url, executor="processes", pool_size=1) as world:
                    plan = world.trigger(Double, {{"value": 21}}).wait(60)
                    step = plan.steps[2]
                    print(plan.result, step.output["value"], step.output["pid"] != os.getpid())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["success", "42", "True"]
