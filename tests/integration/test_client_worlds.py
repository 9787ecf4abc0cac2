"""Many processes, one database: a client world here, an executor world in another process.

The executor runs `tests.support.executor_service` as a real process (forked by
`tests.support.fork_server`, see `tests.support.forked`) on a SQLite file or a
PostgreSQL schema; this process's client world (``World(db, executor=False)``) triggers
plans, sends events and operator calls through the database, and reads the registry.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pydynflow import EventRejected, UnknownStep, World
from pydynflow.errors import DynflowError
from pydynflow.plan import ExecutionPlan
from pydynflow.storage import Storage
from tests.support.forked import spawn
from tests.support.remote_actions import AwaitApproval, BlocksOnce, FailsThenNext, Quick

TIMEOUT = 30


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh shared database: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


class ExecutorProcess:
    """`tests.support.executor_service` running on ``url``."""

    def __init__(self, url: str) -> None:
        # Its log goes to a file: a pipe nobody reads would fill up and block the process.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.process = spawn("tests.support.executor_service", url, stderr=self.log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the world is started
        if not line.startswith("ready "):
            self.process.kill()
            self.process.wait(TIMEOUT)
            raise AssertionError(f"the executor did not start: {line!r} {self.stderr()}")
        self.world_id = line.split()[1]

    def stderr(self) -> str:
        """Return what the process logged so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def close(self) -> None:
        """Stop it and drop its log."""
        self.stop()
        self.log.close()


@pytest.fixture
def executor(url: str) -> Iterator[ExecutorProcess]:
    running = ExecutorProcess(url)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def client(url: str, executor: ExecutorProcess) -> Iterator[World]:
    with World(url, executor=False) as world:
        yield world


def eventually(condition: Callable[[], object], what: str) -> None:
    """Wait until ``condition()`` is true: the other process changes the database."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # another process's progress, seen through the database (noqa: sleep-ok)


def suspended_step(client: World, plan_id: str) -> int:
    """Wait until the plan's run step is suspended; return its id."""
    found: list[int] = []

    def suspended() -> bool:
        plan = client.load(plan_id)
        found[:] = [s.id for s in plan.steps.values() if s.phase == "run"]
        return plan.steps[found[0]].state == "suspended"

    eventually(suspended, f"the run step of {plan_id} to suspend")
    return found[0]


def test_both_worlds_are_registered_and_alive(client: World, executor: ExecutorProcess) -> None:
    worlds = {info.id: info for info in client.worlds()}
    assert set(worlds) == {client.id, executor.world_id}
    remote, me = worlds[executor.world_id], worlds[client.id]
    assert remote.executor and remote.alive and remote.queues == {"default": 5}
    assert remote.pid == executor.process.pid and remote.pid != os.getpid()
    assert not me.executor and me.alive and me.queues == {}
    assert remote.started_at <= remote.last_seen
    seen = remote.last_seen
    eventually(
        lambda: next(i for i in client.worlds() if i.id == executor.world_id).last_seen > seen,
        "the executor's next heartbeat",
    )


def test_a_client_triggers_and_waits_for_a_plan(client: World) -> None:
    triggered = client.trigger(Quick)
    assert triggered.planned
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert plan.steps[2].output == {"done": True}
    history = [entry.name for entry in plan.history]
    assert "start execution" in history and "finish execution" in history


def test_an_event_from_a_client_reaches_a_suspended_step(client: World) -> None:
    triggered = client.trigger(AwaitApproval)
    step_id = suspended_step(client, triggered.id)
    assert client.event(triggered.id, step_id, {"approved": True}, by="ops-oncall") is True
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert plan.steps[step_id].output == {"approval": {"approved": True}}
    # Sent through the database, it carries an id its receiver keeps: a request applied a
    # second time (its executor killed before deleting it) is recognised, not applied again.
    kept = client.storage.chosen_event_ids(triggered.id)
    assert [event_id.startswith("request-") for step, event_id in kept if step == step_id] == [True]
    # An operator's event (``by``) is named in the history: who, from which world and host.
    (sent,) = [e for e in client.load(triggered.id).history if e.name == "event"]
    assert sent.details is not None
    assert (sent.details["user"], sent.details["world"]) == ("ops-oncall", client.name)
    assert (sent.details["step_id"], sent.details["call"]) == (step_id, "event")
    # The step is done: the executor rejects more, and the client raises it here.
    with pytest.raises(EventRejected, match=f"step {step_id} of execution plan"):
        client.event(triggered.id, step_id, {"approved": False})
    assert client.event(triggered.id, step_id, {"approved": False}, optional=True) is False
    with pytest.raises(UnknownStep):
        client.event(triggered.id, 99, {})


def test_cancel_and_halt_from_a_client(client: World) -> None:
    cancelled = client.trigger(AwaitApproval)
    step_id = suspended_step(client, cancelled.id)
    assert client.cancel(cancelled.id) == 1
    plan = cancelled.wait(TIMEOUT)
    assert plan.steps[step_id].output == {"cancelled": True}
    halted = client.trigger(AwaitApproval)
    suspended_step(client, halted.id)
    client.halt(halted.id, by="ops-oncall")
    assert halted.wait(TIMEOUT).state == "stopped"
    # Who asked, from where: each plan's history says it.
    (cancel,) = [e for e in client.load(cancelled.id).history if e.name == "cancel"]
    (halt,) = [e for e in client.load(halted.id).history if e.name == "halt"]
    assert cancel.details is not None and halt.details is not None
    assert (cancel.details["world"], cancel.details["force"]) == (client.name, False)
    assert (halt.details["user"], halt.details["call"]) == ("ops-oncall", "halt")


def test_skip_and_resume_from_a_client(client: World) -> None:
    plan = client.trigger(FailsThenNext).wait(TIMEOUT)
    assert (plan.state, plan.result) == ("paused", "error")
    failed = next(s for s in plan.steps.values() if s.state == "error")
    client.skip(plan.id, failed.id)
    resumed = client.resume(plan.id).wait(TIMEOUT)
    assert (resumed.state, resumed.result) == ("stopped", "warning")
    notes = [e for e in resumed.history if e.name in ("skip", "resume")]
    assert [e.name for e in notes] == ["skip", "resume"]
    for entry in notes:  # who asked, from where: the client's world and host
        assert entry.details is not None and entry.details["world"] == client.name
        assert entry.details["call"] in ("skip", "resume")


def test_a_rejected_execute_is_raised_in_the_client(client: World) -> None:
    plan = client.trigger(Quick).wait(TIMEOUT)
    with pytest.raises(DynflowError, match="is stopped"):
        client.execute(plan.id).wait(TIMEOUT)


def test_an_executor_invalidates_a_dead_world(url: str) -> None:
    World(url).stop()  # create the database
    with Storage(url, create=False) as storage:
        for world_id, executor in (("dead-client", False), ("dead-executor", True)):
            storage.register_world(
                world_id,
                name="gone",
                executor=executor,
                queues={},
                pid=1,
                hostname="elsewhere",
                validity_timeout=30.0,
            )
        long_ago = storage._dt(datetime.now(UTC) - timedelta(minutes=5))
        storage.database.execute_sql(
            f"UPDATE dynflow_worlds SET last_seen = {storage.database.param} "
            "WHERE id = 'dead-client'",
            (long_ago,),
        )
    with World(url, executor=False) as client:
        seen = {info.id: info.alive for info in client.worlds()}
        assert seen == {"dead-client": False, "dead-executor": True, client.id: True}
        running = ExecutorProcess(url)
        try:
            # The executor lock says the other executor is dead, whatever its heartbeat
            # says; the client's heartbeat is too old.
            eventually(
                lambda: {i.id for i in client.worlds()} == {client.id, running.world_id},
                "the executor to invalidate both dead worlds",
            )
        finally:
            assert running.stop() == 0
        assert "invalidated a dead world" in running.stderr()


def test_invalidate_on_request(url: str, executor: ExecutorProcess) -> None:
    with World(url, executor=False) as client:
        with pytest.raises(ValueError, match="cannot invalidate itself"):
            client.invalidate(client.id)
        assert client.invalidate("no-such-world") is False
        # An executor whose record is removed stops: it can no longer claim to be alive.
        assert client.invalidate(executor.world_id) is True
        assert executor.process.wait(TIMEOUT) == 0
        assert "this world was invalidated by another world" in executor.stderr()
        assert [i.id for i in client.worlds()] == [client.id]


def test_a_client_whose_record_was_removed_registers_again(
    url: str, executor: ExecutorProcess
) -> None:
    with World(url, executor=False, heartbeat=0.1, validity_timeout=1.0) as client:
        with Storage(url, create=False) as storage:
            assert storage.remove_world(client.id)
        eventually(lambda: client.id in {i.id for i in client.worlds()}, "re-registration")
        assert client.trigger(Quick).wait(TIMEOUT).result == "success"


def test_plans_wait_in_planned_while_no_executor_is_alive(url: str) -> None:
    World(url).stop()  # create the database
    with World(url, executor=False) as client:
        plan = client.plan(Quick)
        with pytest.raises(DynflowError, match="no executor world is alive"):
            client.execute(plan.id)
        triggered = client.trigger(Quick)  # stored, waiting for an executor
        assert client.load(triggered.id).state == "planned" and not triggered.done()
        running = ExecutorProcess(url)  # auto_execute: it runs what was left planned
        try:
            assert triggered.wait(TIMEOUT).result == "success"
            eventually(lambda: client.load(plan.id).state == "stopped", "auto-execution")
        finally:
            running.close()
        stopped: ExecutionPlan = client.load(plan.id)
        assert stopped.result == "success"


# -- several executor processes ------------------------------------------------------------


def _executing_worlds(plan: ExecutionPlan) -> list[str | None]:
    return [entry.world_id for entry in plan.history if entry.name == "start execution"]


def test_two_executor_processes_share_the_work_and_the_events(url: str) -> None:
    World(url).stop()  # create the database
    first, second = ExecutorProcess(url), ExecutorProcess(url)
    try:
        with World(url, executor=False) as client:
            executors = {i.id for i in client.worlds() if i.executor and i.alive}
            assert executors == {first.world_id, second.world_id}
            waiting = [client.trigger(AwaitApproval) for _ in range(20)]
            steps = [suspended_step(client, t.id) for t in waiting]
            owners = [_executing_worlds(client.load(t.id)) for t in waiting]
            assert all(len(o) == 1 and o[0] in executors for o in owners), owners
            # Each event goes to the process that runs its plan, whichever it is.
            for triggered, step_id in zip(waiting, steps, strict=True):
                assert client.event(triggered.id, step_id, {"approved": triggered.id})
            for triggered, step_id in zip(waiting, steps, strict=True):
                plan = triggered.wait(TIMEOUT)
                assert plan.result == "success"
                assert plan.steps[step_id].output == {"approval": {"approved": triggered.id}}
                assert len(_executing_worlds(plan)) == 1  # ran once, on one world
    finally:
        assert first.stop() == 0 and second.stop() == 0


def test_a_killed_executor_s_plans_are_continued_by_the_other(url: str) -> None:
    World(url).stop()
    first, second = ExecutorProcess(url), ExecutorProcess(url)
    try:
        with World(url, executor=False) as client:
            waiting = [client.trigger(AwaitApproval) for _ in range(10)]
            for t in waiting:
                suspended_step(client, t.id)
            # Kill the world that runs the first plan (which one takes a plan is open).
            owner = _executing_worlds(client.load(waiting[0].id))[0]
            victim, survivor = (first, second) if owner == first.world_id else (second, first)
            on_victim = [
                t for t in waiting if _executing_worlds(client.load(t.id)) == [victim.world_id]
            ]
            victim.process.kill()  # SIGKILL: no goodbye; its world lock goes with it
            victim.process.wait(TIMEOUT)
            eventually(
                lambda: victim.world_id not in {i.id for i in client.worlds()},
                "the other executor to invalidate the killed one",
            )
            for triggered in on_victim:  # continued on the other: started again, waiting again
                eventually(
                    lambda t=triggered: (
                        _executing_worlds(client.load(t.id))[-1] == survivor.world_id
                    ),
                    "the other executor to continue the plan",
                )
            for triggered in waiting:
                step_id = suspended_step(client, triggered.id)
                client.event(triggered.id, step_id, {"approved": True})
            for triggered in waiting:
                plan = triggered.wait(TIMEOUT)
                assert (plan.state, plan.result) == ("stopped", "success")
            for plan in [client.load(t.id) for t in on_victim]:
                assert _executing_worlds(plan)[-1] == survivor.world_id
                assert any(e.name == "pause execution" for e in plan.history)
    finally:
        first.close()
        second.close()


def test_a_client_s_wait_goes_on_while_its_plan_moves_to_another_executor(
    url: str, tmp_path: Path
) -> None:
    World(url).stop()
    first, second = ExecutorProcess(url), ExecutorProcess(url)
    marker = tmp_path / "pid"
    try:
        with World(url, executor=False) as client:
            triggered = client.trigger(BlocksOnce, {"marker": str(marker)})
            eventually(marker.exists, "the step to start")
            victim = first if int(marker.read_text()) == first.process.pid else second
            survivor = second if victim is first else first
            victim.process.kill()
            # The plan pauses ("crash") on its way to the survivor: not an end to wait for.
            plan = triggered.wait(TIMEOUT)
            assert (plan.state, plan.result) == ("stopped", "success")
            assert plan.steps[2].output == {"pid": survivor.process.pid}
            assert _executing_worlds(plan)[-1] == survivor.world_id
    finally:
        first.close()
        second.close()


def test_a_gracefully_stopped_executor_s_plans_go_on_on_the_other(url: str) -> None:
    """DISP-06: an executor stops (SIGTERM) while its plan waits; the plan goes on on the
    other executor, its suspended step run again, and ends there."""
    World(url).stop()
    first, second = ExecutorProcess(url), ExecutorProcess(url)
    try:
        with World(url, executor=False) as client:
            triggered = client.trigger(AwaitApproval)
            suspended_step(client, triggered.id)
            owner = _executing_worlds(client.load(triggered.id))[0]
            leaving, staying = (first, second) if owner == first.world_id else (second, first)
            assert leaving.stop() == 0  # graceful: the plan paused ("stop"), world gone
            try:
                eventually(
                    lambda: _executing_worlds(client.load(triggered.id))[-1] == staying.world_id,
                    "the staying executor to continue the plan",
                )
            except AssertionError:
                plan = client.load(triggered.id)
                raise AssertionError(
                    f"{plan.state} {[(e.name, e.world_id, e.details) for e in plan.history]}"
                    f"\nleaving {leaving.world_id}: {leaving.stderr()[-3000:]}"
                    f"\nstaying {staying.world_id}: {staying.stderr()[-3000:]}"
                ) from None
            step_id = suspended_step(client, triggered.id)
            client.event(triggered.id, step_id, "finish")
            plan = triggered.wait(TIMEOUT)
            assert (plan.state, plan.result) == ("stopped", "success")
            names = [entry.name for entry in plan.history]
            assert names == [
                "start execution",
                "pause execution",
                "start execution",
                "finish execution",
            ]
            assert plan.history[0].world_id == leaving.world_id
            assert plan.history[-1].world_id == staying.world_id
            assert plan.history[1].details == {"reason": "stop"}
    finally:
        first.close()
        second.close()


def test_an_event_sent_before_the_plan_runs_is_kept_for_it(client: World) -> None:
    plan = client.plan(AwaitApproval)  # planned: it runs nowhere yet
    assert client.event(plan.id, 2, {"approved": "early"}) is True
    done = client.execute(plan.id).wait(TIMEOUT)
    assert (done.state, done.result) == ("stopped", "success")
    assert done.steps[2].output == {"approval": {"approved": "early"}}
