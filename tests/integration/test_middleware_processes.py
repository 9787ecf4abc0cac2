"""executor="processes": middleware runs where the user code runs, in the worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pydynflow import PlanState, Result, World
from tests.support.middleware_example import FileLog, Logged

TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_run_and_finalize_hooks_run_in_the_worker_process(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    with World(sqlite_url, executor="processes", pool_size=1, middleware=[FileLog]) as world:
        plan = world.trigger(Logged, log=str(log)).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [name for name, _ in lines] == [
        "plan_phase",
        "before_run",
        "run",
        "after_run",
        "before_finalize_phase",
        "before_finalize",
        "finalize",
        "after_finalize_phase",
    ]
    pids = {name: int(pid) for name, pid in lines}
    assert pids["plan_phase"] == os.getpid()  # planning runs in the world's process
    assert pids["run"] != os.getpid()
    assert pids["before_run"] == pids["after_run"] == pids["run"]
    finalizing = {pids[n] for n in lines_named(lines, "finalize")}
    assert len(finalizing) == 1 and finalizing != {os.getpid()}


def lines_named(lines: list[list[str]], part: str) -> list[str]:
    return [name for name, _ in lines if part in name]


def test_middleware_defined_in_main_travels_to_the_workers(tmp_path: Path) -> None:
    script = tmp_path / "main_middleware.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            from pydynflow import Action, Middleware, World

            class StampPid(Middleware):
                def run(self, call_next, event):
                    result = call_next(event)
                    self.action.output["hook_pid"] = os.getpid()
                    return result

            class Work(Action):
                middleware = [StampPid]

                def run(self):
                    self.output["run_pid"] = os.getpid()

            if __name__ == "__main__":
                url = "sqlite:///{tmp_path / "main.db"}"
                with World(url, executor="processes", pool_size=1) as world:
                    output = world.trigger(Work).wait(60).steps[2].output
                    print(output["hook_pid"] == output["run_pid"] != os.getpid())
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
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True", done.stdout + done.stderr
