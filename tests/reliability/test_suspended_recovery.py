"""SIGKILL with a suspended step, or with an accepted event not yet delivered: nothing is lost.

Acceptance criteria of suspend and events:

* a step suspended in a process that is killed and restarted gets ``run(None)`` again, with
  the output it had persisted, and completes when the event comes;
* an event accepted (``world.event`` returned) just before a crash is not lost: it is
  delivered from storage once the step runs again;
* an event a step was working on when the process was killed (``run(event)`` had it, its
  outcome was not stored) is not lost either: it stays stored, and the step's next run gets it
  again (at least once, like the run itself);
* an async run parked in ``wait_for_event`` starts again from the top after a kill, with its
  persisted output: what it recorded before the await is not done twice.

The child is a real process (`suspend_worker`); the test synchronises only on the lines it
prints, and, in this process, on the suspend callback of the same action class.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

import pytest

from pydynflow import PlanState, Result, StepState, World
from pydynflow.storage import Storage
from tests.reliability.child import running_child
from tests.reliability.suspend_actions import (
    BLOCK_EVENT,
    BLOCK_RUN,
    PARKED,
    Approval,
    AsyncApproval,
)
from tests.reliability.suspend_worker import EVENT

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30
ABNORMAL = "Abnormal termination (previous state: running)"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _fresh_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps never block in this process; no parked note is left over from another test."""
    monkeypatch.delenv(BLOCK_RUN, raising=False)
    monkeypatch.delenv(BLOCK_EVENT, raising=False)
    while not PARKED.empty():
        PARKED.get_nowait()


def child(mode: str, tmp_path: Path, **env: str) -> Any:
    """Run the `suspend_worker` child in ``mode``; kill it on the way out."""
    return running_child("tests.reliability.suspend_worker", mode, tmp_path, **env)


def stored(url: str, plan_id: str) -> tuple[Any, list[tuple[int, int, Any]]]:
    """Read a plan and its pending events straight from the store, as the kill left them."""
    storage = Storage(url)
    try:
        return storage.load_plan(plan_id), storage.envelopes(plan_id)
    finally:
        storage.close()


def parked_again(plan_id: str) -> tuple[int, int]:
    """Wait until the step of ``plan_id`` is parked in this process; return (step, runs)."""
    try:
        parked_plan, step_id, runs = PARKED.get(timeout=TIMEOUT)
    except queue.Empty:
        pytest.fail(f"the step of {plan_id} did not suspend again in {TIMEOUT}s")
    assert parked_plan == plan_id
    return step_id, runs


def test_a_suspended_step_runs_again_after_a_kill_and_completes_on_the_event(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with child("park", tmp_path) as worker:
        # the suspend callback's line (it may come before or after the child's "plan" line)
        line = worker.read_until(lambda line: line.startswith("parked "))
        _, plan_id, step_text, runs = line.split()
        step_id = int(step_text)
        assert runs == "1"
        child_pid = worker.proc.pid
        worker.sigkill()

    before, envelopes = stored(url, plan_id)
    assert before.state == PlanState.RUNNING
    assert before.steps[step_id].state == StepState.SUSPENDED
    assert before.steps[step_id].output == {"runs": 1, "pids": [child_pid]}
    assert envelopes == []

    with World(url) as world:
        (triggered,) = world.auto_executed  # suspended, not running: nothing to fix by hand
        assert triggered.id == plan_id
        assert parked_again(plan_id) == (step_id, 2)
        parked = world.load(plan_id).steps[step_id]
        assert parked.state == StepState.SUSPENDED
        # run(None) again, on the output the killed process had persisted
        assert parked.output == {"runs": 2, "pids": [child_pid, os.getpid()]}

        assert world.event(plan_id, step_id, "go") is True
        finished = triggered.wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        step = finished.steps[step_id]
        assert step.state == StepState.SUCCESS and step.error is None
        assert step.output == {"runs": 2, "pids": [child_pid, os.getpid()], "event": "go"}
        assert world.storage.envelopes(plan_id) == []


def test_an_event_accepted_before_a_kill_is_delivered_after_the_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with child("event", tmp_path, **{BLOCK_RUN: "1"}) as worker:
        # The step may start before trigger() returns in the child: "running" can come first.
        _, plan_id, step_text = worker.read_until(lambda line: line.startswith("running ")).split()
        step_id = int(step_text)
        # world.event returned True while the step was still running: queued and stored
        assert worker.read_until(lambda line: line.startswith("event-accepted")) == (
            "event-accepted True"
        )
        assert f"plan {plan_id}" in worker.seen
        worker.sigkill()

    before, envelopes = stored(url, plan_id)
    assert before.state == PlanState.RUNNING
    assert before.steps[step_id].state == StepState.RUNNING
    assert before.steps[step_id].output == {}  # the killed run never returned
    assert envelopes == [(envelopes[0][0], step_id, EVENT)]

    with World(url) as world:
        # A step killed while running is never re-run blindly: its policy (Pause) applies,
        # and the plan waits for a person.
        continued = {triggered.id: triggered for triggered in world.auto_executed}
        assert continued[plan_id].wait(TIMEOUT).state == PlanState.PAUSED
        paused = world.load(plan_id)
        assert (paused.state, paused.result) == (PlanState.PAUSED, Result.ERROR)
        failed = paused.steps[step_id]
        assert failed.state == StepState.ERROR
        assert failed.error is not None and failed.error.message == ABNORMAL
        assert [payload for _, _, payload in world.storage.envelopes(plan_id)] == [EVENT]

        resumed = world.resume(plan_id)
        # run(None) again (no block here): it suspends, then gets the stored event
        assert parked_again(plan_id) == (step_id, 1)
        finished = resumed.wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        step = finished.steps[step_id]
        assert step.state == StepState.SUCCESS and step.error is None
        assert step.output == {"runs": 1, "pids": [os.getpid()], "event": EVENT}
        assert world.storage.envelopes(plan_id) == []  # delivered once, then gone


def killed_while_handling(worker: Any, plan_id: str, step_id: int) -> None:
    """Wait until the child's step has the event and its sender was answered; kill it."""
    wanted = {"event-accepted True", f"handling {plan_id} {step_id}"}
    while wanted:
        wanted.discard(worker.read_until(lambda line: line in wanted))
    worker.sigkill()


def left_running_with_the_event(url: str, plan_id: str, step_id: int, output: Any) -> None:
    """What the kill left: the step stored running with ``output``, its event stored."""
    before, envelopes = stored(url, plan_id)
    assert before.steps[step_id].state == StepState.RUNNING
    assert before.steps[step_id].output == output
    assert [payload for _, _, payload in envelopes] == [EVENT]


def paused_with_the_event_stored(world: World, plan_id: str, step_id: int) -> None:
    """The restarted world pauses the plan (the killed run is never re-run blindly), and
    the event the run was working on is still stored."""
    continued = {triggered.id: triggered for triggered in world.auto_executed}
    assert continued[plan_id].wait(TIMEOUT).state == PlanState.PAUSED
    failed = world.load(plan_id).steps[step_id]
    assert failed.state == StepState.ERROR
    assert failed.error is not None and failed.error.message == ABNORMAL
    assert [payload for _, _, payload in world.storage.envelopes(plan_id)] == [EVENT]


def test_an_event_a_run_was_handling_at_a_kill_is_delivered_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    with child("event-in-run", tmp_path, **{BLOCK_EVENT: "1"}) as worker:
        plan_id = worker.read_until(lambda line: line.startswith("plan ")).split()[1]
        _, _, step_text, _ = worker.read_until(lambda line: line.startswith("parked ")).split()
        step_id = int(step_text)
        child_pid = worker.proc.pid
        killed_while_handling(worker, plan_id, step_id)
    left_running_with_the_event(url, plan_id, step_id, {"runs": 1, "pids": [child_pid]})

    with World(url) as world:
        paused_with_the_event_stored(world, plan_id, step_id)
        resumed = world.resume(plan_id)
        assert parked_again(plan_id) == (step_id, 2)  # run(None) again, then the event
        finished = resumed.wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert finished.steps[step_id].output == {
            "runs": 2,
            "pids": [child_pid, os.getpid()],
            "event": EVENT,
        }
        assert world.storage.envelopes(plan_id) == []


def test_an_event_an_async_run_was_handling_at_a_kill_is_delivered_again(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    ledger = tmp_path / "requests.log"
    with child("async-event-in-run", tmp_path, **{BLOCK_EVENT: "1"}) as worker:
        line = worker.read_until(lambda line: line.startswith("plan "))
        _, plan_id, step_text = line.split()
        step_id = int(step_text)
        child_pid = worker.proc.pid
        killed_while_handling(worker, plan_id, step_id)
    left_running_with_the_event(url, plan_id, step_id, {"starts": 1, "requested": True})

    with World(url) as world:
        paused_with_the_event_stored(world, plan_id, step_id)
        finished = world.resume(plan_id).wait(TIMEOUT)
        assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert finished.steps[step_id].output == {"starts": 2, "requested": True, "event": EVENT}
        assert world.storage.envelopes(plan_id) == []
    assert ledger.read_text().splitlines() == [f"request from {child_pid}"]


def test_an_async_run_starts_again_from_the_top_after_a_kill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
    ledger = tmp_path / "requests.log"
    with child("async", tmp_path) as worker:
        _, plan_id, step_text = worker.read_until(lambda line: line.startswith("plan ")).split()
        step_id = int(step_text)
        worker.read_until(lambda line: line == "waiting")
        child_pid = worker.proc.pid
        worker.sigkill()

    before, _ = stored(url, plan_id)
    assert before.steps[step_id].state == StepState.SUSPENDED
    assert before.steps[step_id].output == {"starts": 1, "requested": True}
    assert ledger.read_text().splitlines() == [f"request from {child_pid}"]

    with World(url) as world:
        (triggered,) = world.auto_executed
        assert triggered.id == plan_id
        # Sent at once: if the restarted run has not reached its await yet, it is queued.
        assert world.event(plan_id, step_id, "go") is True
        finished = triggered.wait(TIMEOUT)
    assert (finished.state, finished.result) == (PlanState.STOPPED, Result.SUCCESS)
    # run started again from the top (starts == 2), on the persisted output, so the request
    # recorded before the await was not sent a second time
    assert finished.steps[step_id].output == {"starts": 2, "requested": True, "event": "go"}
    assert ledger.read_text().splitlines() == [f"request from {child_pid}"]


def test_the_actions_resolve_under_one_name() -> None:
    """Both processes store and resolve the classes as ``tests.reliability.suspend_actions``."""
    for cls in (Approval, AsyncApproval):
        assert cls.class_name() == f"tests.reliability.suspend_actions.{cls.__name__}"
