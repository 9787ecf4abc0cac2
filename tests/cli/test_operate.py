"""The operator commands (resume, skip, cancel, halt, event) as processes: their client
world reaches the executor world of the test process through the database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pydynflow import PlanState, Result, StepState, World
from tests.cli.actions import Fails, FailsOnce, Waits, WaitsCancellable
from tests.cli.conftest import SQLITE_ONLY, TIMEOUT, Cli, Plans, trigger_suspended

NO_EXECUTOR = "no executor world is alive on "


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _failed(done: subprocess.CompletedProcess[str], message: str) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_an_event_reaches_the_suspended_step(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    plan_id = plans.waiting.id
    done = cli("plans", "event", plan_id, "2", '{"approved": true}', "--db", url)
    assert _ok(done) == f"event accepted by step 2 of execution plan {plan_id}\n"
    plan = plans.waiting.wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.steps[2].output["event"] == {"approved": True}


def test_an_event_payload_can_come_from_stdin(cli: Cli, sqlite_url: str) -> None:
    with World(sqlite_url) as executor:
        waiting = trigger_suspended(executor, Waits)
        done = cli(
            "plans", "event", waiting.id, "2", "-", "--db", sqlite_url, "--json", stdin="[1, 2]"
        )
        assert json.loads(_ok(done)) == {
            "plan_id": waiting.id,
            "step_id": 2,
            "event_id": None,
            "accepted": True,
        }
        assert waiting.wait(TIMEOUT).steps[2].output["event"] == [1, 2]


def test_resume_wait_runs_a_failed_plan_to_success(
    cli: Cli, url: str, executor: World, tmp_path: Path
) -> None:
    plan = executor.trigger(FailsOnce, {"marker": str(tmp_path / "failed-once")}).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    done = cli("plans", "resume", plan.id, "--wait", "--timeout", str(TIMEOUT), "--db", url)
    assert _ok(done) == f"execution plan {plan.id} is stopped with result success\n"
    resumed = executor.load(plan.id)
    assert resumed.steps[2].attempts == 2 and resumed.steps[2].output == {"done": True}
    assert "resume" in [entry.name for entry in resumed.history]


def test_skip_then_resume_ends_the_plan_with_a_warning(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    plan_id = plans.failed.id
    done = cli("plans", "skip", plan_id, "2", "--db", url)
    assert f"skipped step 2 of execution plan {plan_id}" in _ok(done)
    skipped = executor.load(plan_id)
    assert (skipped.state, skipped.steps[2].state) == (PlanState.PAUSED, StepState.SKIPPING)

    done = cli("plans", "resume", plan_id, "--wait", "--json", "--db", url)
    ended = json.loads(_ok(done))
    assert (ended["id"], ended["state"], ended["result"]) == (plan_id, "stopped", "warning")


@SQLITE_ONLY
def test_resume_wait_exits_1_when_the_plan_pauses_again(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    done = cli("plans", "resume", plans.failed.id, "--wait", "--db", url)
    assert done.stdout == f"execution plan {plans.failed.id} is paused with result error\n"
    _failed(done, f"execution plan {plans.failed.id} did not complete: paused, error")


@SQLITE_ONLY
def test_resume_refuses_a_plan_that_is_not_paused(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    done = cli("plans", "resume", plans.succeeded.id, "--db", url)
    _failed(done, f"execution plan {plans.succeeded.id} is stopped, not paused")


def test_cancel_asks_the_cancellable_step_to_cancel(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    waiting = trigger_suspended(executor, WaitsCancellable)
    done = cli("plans", "cancel", waiting.id, "--db", url, "--json")
    assert json.loads(_ok(done)) == {"plan_id": waiting.id, "force": False, "steps": 1}
    assert waiting.wait(TIMEOUT).steps[2].output["cancelled"] is True

    done = cli("plans", "cancel", plans.waiting.id, "--force", "--db", url)  # not Cancellable
    _failed(done, f"nothing to cancel in execution plan {plans.waiting.id}")


def test_halt_stops_a_running_plan(cli: Cli, url: str, executor: World, plans: Plans) -> None:
    done = cli("plans", "halt", plans.waiting.id, "--db", url)
    assert _ok(done) == f"halted execution plan {plans.waiting.id}\n"
    halted = plans.waiting.wait(TIMEOUT)
    assert halted.state == PlanState.STOPPED
    assert halted.steps[2].state == StepState.SUSPENDED


@SQLITE_ONLY
def test_what_the_executor_refuses_fails_with_its_message(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    stopped = plans.succeeded.id
    _failed(cli("plans", "event", stopped, "2", "{}", "--db", url), "not waiting for events")
    _failed(cli("plans", "skip", stopped, "2", "--db", url), "has to be paused to skip a step")
    _failed(cli("plans", "skip", plans.failed.id, "9", "--db", url), "has no step 9")
    _failed(cli("plans", "event", plans.waiting.id, "9", "{}", "--db", url), "has no step 9")
    for command in (["resume"], ["skip", "2"], ["cancel"], ["halt"], ["event", "2", "{}"]):
        done = cli("plans", command[0], "no-such-plan", *command[1:], "--db", url)
        _failed(done, "no execution plan")


def test_without_a_live_executor_every_operator_command_fails_cleanly(
    cli: Cli, sqlite_url: str
) -> None:
    with World(sqlite_url) as executor:
        failed = executor.trigger(Fails).wait(TIMEOUT)
        waiting = trigger_suspended(executor, WaitsCancellable)
    commands = {
        "resume": [failed.id],
        "skip": [failed.id, "2"],
        "cancel": [waiting.id],
        "halt": [waiting.id],
        "event": [waiting.id, "2", "{}"],
    }
    for name, arguments in commands.items():
        done = cli("plans", name, *arguments, "--db", sqlite_url)
        stderr = _failed(done, f"{name}: {NO_EXECUTOR}")
        assert stderr.startswith("Error: ") and done.stdout == ""


@SQLITE_ONLY
def test_by_names_who_asked_in_the_history(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    done = cli("plans", "skip", plans.failed.id, "2", "--by", "alice", "--db", url)
    _ok(done)
    (note,) = [e for e in executor.load(plans.failed.id).history if e.name == "skip"]
    assert note.details is not None and note.details["user"] == "alice"
    assert note.details["call"] == "skip" and "warning" not in done.stderr


@SQLITE_ONLY
def test_an_event_id_sent_twice_is_applied_once(
    cli: Cli, url: str, executor: World, plans: Plans
) -> None:
    arguments = ("plans", "event", plans.waiting.id, "2", '"go"', "--event-id", "delivery-1")
    _ok(cli(*arguments, "--db", url))
    _ok(cli(*arguments, "--db", url))  # the same id again (the step ended): not applied
    plan = plans.waiting.wait(TIMEOUT)
    assert plan.steps[2].output["event"] == "go"
    assert not [e for e in plan.history if e.name == "event not delivered"]
