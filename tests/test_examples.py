"""The examples run as a user runs them: a subprocess, from another directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Phase, PlanState, Result, World

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def run_example(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "1000",  # rich wraps at the terminal width: keep paths on one line
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
    env.pop("PYDYNFLOW_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_orchestrate_demo(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    database = tmp_path / "demo.db"
    url = f"sqlite:///{database}"

    done = run_example("orchestrate.py", url, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert database.is_file(), report
    assert not (workdir / "pydynflow.db").exists(), "the demo ignored its database argument"

    world = World(url, executor=False)
    try:
        plans = world.plans(limit=None)
        labelled = world.plans(label="create infrastructure", limit=None)
    finally:
        world.stop()
    assert len(plans) == 1, [plan.label for plan in plans]
    assert len(labelled) == 1
    plan = labelled[0]
    assert plan.valid, plan.exception

    # the output names the plan and says where it is stored
    assert "create infrastructure" in done.stdout, report
    assert plan.id in done.stdout, report
    assert str(database) in done.stdout, report

    assert plan.state in (PlanState.PLANNED, PlanState.STOPPED), plan.state
    if plan.state == PlanState.STOPPED:
        assert plan.result == Result.SUCCESS, plan.error
    else:
        assert plan.result == Result.PENDING
    assert plan.run_flow.all_step_ids()


def test_wait_for_approval(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    database = tmp_path / "approvals.db"
    url = f"sqlite:///{database}"

    done = run_example("wait_for_approval.py", url, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert "approval service: ada reviews 'deploy v2.1 to production'" in done.stdout, report
    assert "plan stopped / success" in done.stdout, report
    assert "status: applied: deploy v2.1 to production" in done.stdout, report
    assert str(database) in done.stdout, report
    assert not (workdir / "pydynflow.db").exists(), "the example ignored its database argument"

    world = World(url, executor=False)
    try:
        (plan,) = world.plans(label="change request", limit=None)
    finally:
        world.stop()
    assert plan.id in done.stdout, report
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.actions[1].output == {
        "requested": True,
        "decision": {"approved": True, "by": "ada", "reason": "looks good"},
        "status": "applied: deploy v2.1 to production",
    }


def test_wait_for_approval_default_database(tmp_path: Any) -> None:
    done = run_example("wait_for_approval.py", cwd=tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "status: applied: deploy v2.1 to production" in done.stdout
    assert (tmp_path / "pydynflow.db").is_file()  # the default: a file in the cwd


@pytest.mark.parametrize("flags", [(), ("--threads",)], ids=["processes", "threads"])
def test_flaky_deploy(tmp_path: Any, flags: tuple[str, ...]) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    database = tmp_path / "deploy.db"
    url = f"sqlite:///{database}"

    done = run_example("flaky_deploy.py", url, *flags, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert f"steps run in worker {'threads' if flags else 'processes'}" in done.stdout, report
    assert "result: stopped / warning" in done.stdout, report
    assert str(database) in done.stdout, report
    assert not (workdir / "pydynflow.db").exists(), "the example ignored its database argument"

    # one row per run step: id, action (and host), state, attempts, error
    row = re.compile(r"^\s*(\d+)  (.+?)\s+(\w+)\s+(\d+)  (.*)$")
    rows = {
        match[2]: (match[3], int(match[4]), match[5])
        for match in map(row.match, done.stdout.splitlines())
        if match
    }
    retried = ["UploadArtifact", "Rollout web1", "Rollout web2", "HealthCheck"]
    assert sorted(rows) == sorted([*retried, "WarmCache"]), report
    for name in retried:  # the API fails twice: two restarts, then success
        state, attempts, error = rows[name]
        assert (state, attempts) == ("success", 3), report
        assert "recovered after 2 failed calls" in error, report
    assert rows["WarmCache"][:2] == ("skipped", 1), report

    world = World(url, executor=False)
    try:
        (plan,) = world.plans(label="deploy", limit=None)
    finally:
        world.stop()
    assert plan.id in done.stdout, report
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.WARNING)
    stored = sorted(step.attempts for step in plan.steps_of_phase(Phase.RUN))
    assert stored == [1, 3, 3, 3, 3]


def test_timed_runs(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    url = f"sqlite:///{tmp_path / 'timed.db'}"

    done = run_example("timed_runs.py", url, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    world = World(url, executor=False)
    try:
        (plan,) = world.plans(label="provision host", limit=None)
    finally:
        world.stop()
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    # one "run timed" line per run step, in the step's log context (stderr is not a tty: JSON)
    timed = [json.loads(line) for line in done.stderr.splitlines() if '"run timed"' in line]
    runs = {step.id: step.action_class.__name__ for step in plan.steps_of_phase(Phase.RUN)}
    assert {line["step_id"]: line["action"] for line in timed} == runs, report
    assert all(line["plan_id"] == plan.id for line in timed), report
    seconds = {line["action"]: line["seconds"] for line in timed}
    # the sleeps are timed: the async run's too (its hook awaited it)
    assert seconds["CreateVM"] >= 0.05 and seconds["RegisterDNS"] >= 0.02, report
    assert plan.id in done.stdout, report


def test_mask_secrets(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    url = f"sqlite:///{tmp_path / 'users.db'}"

    done = run_example("mask_secrets.py", url, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    shown = [line.split(":", 1) for line in done.stdout.splitlines() if " shows:" in line]
    assert [reader for reader, _ in shown] == [
        "what wait() shows",
        "what load() shows",
        "what plans() shows",
    ], report
    assert all(what.strip() == "{'username': 'ada', 'password': '***'}" for _, what in shown)
    world = World(url, executor=False)  # no middleware: what is stored
    try:
        (plan,) = world.plans(label="create user", limit=None)
    finally:
        world.stop()
    assert plan.id in done.stdout, report
    assert plan.actions[1].input == {"username": "ada", "password": "correct horse"}
    assert plan.actions[1].output["password_sha256"] in done.stdout, report


def test_release_service_and_its_webhook_in_separate_processes(tmp_path: Path) -> None:
    """The daemon (``pydynflow worker --app release_actions``) and the integration that
    triggers a release and signs it off from another process, on one SQLite file."""
    url = f"sqlite:///{tmp_path / 'releases.db'}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pydynflow.cli",
            "worker",
            "--db",
            url,
            "--app",
            "release_actions",
            "--processes",
            "2",
        ],
        cwd=ROOT / "examples",  # --app modules are imported from the current directory
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # the service is up once a world says it started
            if '"world started"' in line:
                break
        done = run_example("release_webhook.py", url, "2.0", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("release 2.0 started: plan ")
        assert re.fullmatch(r"signed off step \d+ as ada", lines[1])
        assert lines[2] == (
            "release 2.0: stopped / success, published {'published': 'app-2.0.tar.gz'}"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=TIMEOUT)
    assert worker.returncode == 0, output
    with World(url, executor=False) as reader:
        (plan,) = reader.plans()
        run_steps = [s for s in plan.steps.values() if s.phase == Phase.RUN]
        signed = [s for s in run_steps if s.output.get("signed_off_by")]
        assert [s.output["signed_off_by"] for s in signed] == ["ada"]
        assert reader.worlds() == [info for info in reader.worlds() if info.id == reader.id]


def test_bulk_sub_plans(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    url = f"sqlite:///{tmp_path / 'bulk.db'}"

    done = run_example("bulk_sub_plans.py", url, "120", cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    world = World(url, executor=False)
    try:
        (plan,) = world.plans(label="patch hosts", limit=None)
        children = plan.sub_plans()
    finally:
        world.stop()
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    output = plan.actions[1].output
    assert (output["success_count"], output["failed_count"], output["pending_count"]) == (120, 0, 0)
    hosts = sorted(child.actions[child.root_action_id].output["patched"] for child in children)
    assert hosts == [f"host-{index:04d}" for index in range(120)]
    assert "120/120" in done.stdout and plan.id in done.stdout, report


def test_delayed_and_chained(tmp_path: Any) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    url = f"sqlite:///{tmp_path / 'nightly.db'}"

    done = run_example("delayed_and_chained.py", url, cwd=workdir)

    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    with World(url, executor=False) as world:
        plans = {plan.label: plan for plan in world.plans(limit=None)}
    assert set(plans) == {"backup", "rotate logs", "report", "scrub disks"}, report
    for label in ("backup", "rotate logs", "report"):
        plan = plans[label]
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), label
        assert [entry.name for entry in plan.history] == [
            "delay",
            "start execution",
            "finish execution",
        ]
    backup, rotate, nightly = plans["backup"], plans["rotate logs"], plans["report"]
    assert backup.ended_at and rotate.started_at and backup.ended_at <= rotate.started_at
    assert rotate.ended_at and nightly.started_at and rotate.ended_at <= nightly.started_at
    scrub = plans["scrub disks"]
    assert (scrub.state, scrub.result) == (PlanState.STOPPED, Result.CANCELLED)
    assert "report waits for 2 plans" in done.stdout, report
    assert "report sent to ops@example.com" in done.stdout, report
