"""Engine logs: JSON lines off a terminal, each carrying world, plan, step, action and phase.

The world runs in a subprocess whose stderr is a pipe (not a TTY), so the renderer chosen by
`pydynflow.logging.configure_logging` is the JSON one, as for a daemon or in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
RUN_STEPS = {4, 7, 9, 13, 16, 18}  # EX-1's run steps for two issues
STEP_KEYS = ("world_id", "plan_id", "step_id", "action_class", "phase")

SCRIPT = """
import json, sys
from pydynflow import World
from tests.support.code_workflow import ISSUES, IncomingIssues

with World(sys.argv[1], auto_execute=False) as world:
    plan = world.trigger(IncomingIssues, ISSUES).wait(60)
    print(json.dumps({"world_id": world.id, "plan_id": plan.id,
                      "state": plan.state, "result": plan.result}))
"""


def run_world(tmp_path: Path, log_level: str | None) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYDYNFLOW_LOG_LEVEL", None)
    if log_level is not None:
        env["PYDYNFLOW_LOG_LEVEL"] = log_level
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'log.db'}"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,  # stderr is a pipe: not a TTY
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["state"] == "stopped" and summary["result"] == "success", summary
    return summary, done.stderr


def parse_lines(stderr: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(stderr.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stderr line {number} is not JSON ({exc}): {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_debug_logs_are_json_with_step_context(tmp_path: Path) -> None:
    summary, stderr = run_world(tmp_path, "DEBUG")
    records = parse_lines(stderr)
    assert records, "no log lines at DEBUG"
    for record in records:
        assert "event" in record and "level" in record and "timestamp" in record, record
        assert record["timestamp"].endswith("Z"), record  # ISO 8601, UTC

    events = {record["event"] for record in records}
    for kind in ("step started", "step finished"):
        lines = [record for record in records if record["event"] == kind]
        assert lines, f"no {kind!r} line; events logged: {sorted(events)}"
        for record in lines:
            missing = [key for key in STEP_KEYS if key not in record]
            assert not missing, f"{kind!r} line lacks {missing}: {record}"
            assert record["world_id"] == summary["world_id"], record
            assert record["plan_id"] == summary["plan_id"], record
            assert record["phase"] in ("run", "finalize"), record
            assert record["action_class"].startswith("tests.support.code_workflow."), record
        run_steps = {record["step_id"] for record in lines if record["phase"] == "run"}
        assert run_steps == RUN_STEPS, (kind, run_steps)

    triage = [
        record
        for record in records
        if record["event"] == "step finished" and record["step_id"] in (4, 13)
    ]
    assert {record["action_class"] for record in triage} == {"tests.support.code_workflow.Triage"}

    plan_lines = [r for r in records if r["event"] in ("plan started", "plan finished")]
    assert {r["event"] for r in plan_lines} == {"plan started", "plan finished"}
    for record in plan_lines:
        assert record["world_id"] == summary["world_id"], record
        assert record["plan_id"] == summary["plan_id"], record


def test_default_level_is_quiet(tmp_path: Path) -> None:
    _, stderr = run_world(tmp_path, None)
    records = parse_lines(stderr)
    assert [r for r in records if r["level"] in ("debug", "info")] == []


# -- lines the user code logs ---------------------------------------------------------------

USER_SCRIPT = """
import json, sys
import structlog
from pydynflow import Action, World

class Greet(Action):
    def run(self):
        structlog.get_logger().warning("greeting", name=self.input["name"])

    def finalize(self):
        structlog.get_logger().warning("greeted")

if __name__ == "__main__":
    with World(sys.argv[1], executor=sys.argv[2]) as world:
        plan = world.trigger(Greet, name="ada").wait(60)
    print(json.dumps({"plan_id": plan.id, "state": plan.state, "result": plan.result}))
"""


def test_configure_logging_merges_the_context_variables() -> None:
    import structlog

    from pydynflow.logging import configure_logging

    saved = structlog.get_config()
    try:
        configure_logging(force=True)
        processors = structlog.get_config()["processors"]
        assert structlog.contextvars.merge_contextvars in processors
    finally:
        structlog.configure(**saved)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_user_log_lines_carry_the_plan_and_the_step(tmp_path: Path, executor: str) -> None:
    script = tmp_path / "greet.py"  # a script: worker processes import it as __mp_main__
    script.write_text(USER_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYDYNFLOW_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'log.db'}", executor],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,  # stderr is a pipe: JSON, in the worker processes too
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (last,) = done.stdout.splitlines()  # nothing but the summary: no log line on stdout
    summary = json.loads(last)
    assert (summary["state"], summary["result"]) == ("stopped", "success"), summary

    records = {record["event"]: record for record in parse_lines(done.stderr)}
    expected = {
        "greeting": {"step_id": 2, "phase": "run", "name": "ada"},
        "greeted": {"step_id": 3, "phase": "finalize", "attempt": 1},
    }
    for event, fields in expected.items():
        record = records.get(event)
        assert record is not None, f"no {event!r} line in stderr:\n{done.stderr}"
        assert record["plan_id"] == summary["plan_id"], record
        assert record["action_class"] == "__main__.Greet", record
        assert record["level"] == "warning" and record["timestamp"].endswith("Z"), record
        for key, value in fields.items():
            assert record[key] == value, (key, record)
