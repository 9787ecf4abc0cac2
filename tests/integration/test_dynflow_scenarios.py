"""Dynflow's DISP-*, REC-* and COORD-* scenarios (reference/dynflow-scenarios.md, sections 12
and 13), on a SQLite file and on PostgreSQL.

The worlds share one database. Where a scenario is about a process (one that stops
listening, dies or comes back), the executor world runs in a process of its own
(`tests.support.executor_service`); otherwise the worlds are `World` objects of this
process, each with its own registry record, inboxes and dispatch thread, as in a process of
its own. The tests wait on what the database shows (polled with a deadline), never on a
sleep.

Dynflow checks some of these through its internals (coordinator lock logs, the ping cache,
planning and auto-execute locks, coordinator record classes). pydynflow has none of them;
each such scenario is mapped to the behaviour it protects.

Scenario -> test (``here`` is this module; ``client_worlds`` is
tests/integration/test_client_worlds.py):

- DISP-01 execution: client_worlds::test_a_client_triggers_and_waits_for_a_plan (a client
  and an executor process), client_worlds::test_two_executor_processes_share_the_work_and_the_events
  (two executors).
- DISP-02 event passing: client_worlds::test_an_event_from_a_client_reaches_a_suspended_step,
  client_worlds::test_two_executor_processes_share_the_work_and_the_events.
- DISP-03 event to a finished plan: from a client to its executor in
  client_worlds::test_an_event_from_a_client_reaches_a_suspended_step; from every world of
  two executors and two clients in here::test_an_event_to_a_finished_plan_is_rejected_from_every_world.
- DISP-04 executor acting as a client: tests/test_events.py::test_disp04_executor_acting_as_a_client;
  sub-plans spread over executor processes in
  tests/integration/test_sub_plans_processes.py::test_sub_plans_run_on_the_executors_and_are_counted_once.
- DISP-06 re-dispatch when an executor terminates:
  client_worlds::test_a_gracefully_stopped_executor_s_plans_go_on_on_the_other.
- DISP-07 ping: here::test_a_ping_is_answered_by_a_live_executor_and_not_by_a_stopped_one.
- DISP-08 ping cache: pydynflow has none; a world is alive while its ``last_seen`` is
  younger than its ``validity_timeout`` (`World.worlds`): fresh after start in
  client_worlds::test_both_worlds_are_registered_and_alive, not alive once seen long ago in
  client_worlds::test_an_executor_invalidates_a_dead_world.
- DISP-09 no executor available: deliberately different (API.md "Many processes"): a
  client's trigger is stored and waits ``planned`` for an executor instead of failing, and
  the calls that need a running executor raise "no executor world is alive":
  client_worlds::test_plans_wait_in_planned_while_no_executor_is_alive.
- REC-01 invalidation removes the record: client_worlds::test_invalidate_on_request.
- REC-02 re-execution after invalidation:
  here::test_an_invalidated_executor_s_plan_goes_on_elsewhere_and_its_world_writes_nothing_more.
- REC-03 invalidation with no other executor:
  here::test_an_invalidated_executor_s_plan_is_paused_when_no_other_executor_lives.
- REC-04 invalidation lock log: the lock makes two detectors harmless:
  here::test_two_worlds_invalidating_at_once_invalidate_and_recover_once.
- REC-06 singleton lock of a missing plan, REC-09 planning lock without a plan: a planning
  takes no lock in pydynflow but a `Singleton`'s:
  here::test_an_invalidated_world_s_singleton_locks_of_unstored_plans_are_let_go.
- REC-07 / REC-08 orphaned planning, complete or not: pydynflow stores a plan once planned,
  in one commit, so a world that dies while planning leaves either nothing (but the
  singleton locks of REC-06) or a delayed plan it claimed, stored ``planning``, which is
  planned again from its stored arguments: one case,
  here::test_a_delayed_plan_a_killed_world_left_planning_is_planned_again_and_run.
- REC-11 auto-execute of planned plans:
  client_worlds::test_plans_wait_in_planned_while_no_executor_is_alive.
- REC-12 auto-execute after an executor died: a live executor continues the plan in
  client_worlds::test_a_killed_executor_s_plans_are_continued_by_the_other, one started
  afterwards in tests/reliability/test_suspended_recovery.py::test_a_suspended_step_runs_again_after_a_kill_and_completes_on_the_event.
- REC-13 auto-execute skips plans paused with an error: on start in
  tests/test_recovery.py::test_a_restart_names_the_plans_left_for_a_person; when a world
  leaves in here::test_a_world_leaving_continues_its_interrupted_plans_not_those_paused_for_a_person.
- REC-14 validity check on start (executor worlds do it):
  client_worlds::test_an_executor_invalidates_a_dead_world.
- REC-16 validity report: ``pydynflow worlds check [--invalidate]`` in
  tests/cli/test_worlds.py::test_check_finds_a_killed_world_and_invalidates_it.
- REC-17 filtered check: `World.invalidate` takes one world id; the others stay:
  client_worlds::test_invalidate_on_request.
- REC-18 orphaned world-owned locks: the delayed-executor lock is the one lock a world owns
  (there is no auto-execute lock; a world's recovery records go with its record):
  tests/test_delayed.py::test_the_lock_of_a_world_that_is_gone_is_taken_over,
  and a live holder keeps it in
  tests/test_delayed.py::test_one_delayed_executor_per_database_and_a_takeover_when_it_stops.
- REC-19 orphaned singleton locks: the next planner takes a void lock over (no cleaning
  sweep): tests/test_singleton.py::test_a_lock_whose_plan_stopped_is_taken_over,
  tests/test_singleton.py::test_a_lock_of_a_plan_that_was_never_stored_is_taken_over_once_orphaned;
  a live plan keeps its lock in tests/test_singleton.py::test_sing_03_a_suspended_step_keeps_the_lock.
- COORD-03 release by owner, COORD-06 release on termination: a world's records go with
  it (its recovery records when it deregisters or is invalidated, the delayed-executor lock
  when it stops): tests/test_delayed.py::test_one_delayed_executor_per_database_and_a_takeover_when_it_stops.
- COORD-08 global uniqueness: two worlds cannot hold one lock:
  tests/test_singleton.py::test_two_threads_planning_at_once_exactly_one_plans, and the record
  contract in tests/storage/test_contract.py::StorageContract::test_a_record_is_taken_once_and_taken_over_only_when_stale.

The reference has no DISP-05, REC-05, REC-10, REC-15 or COORD-05 (its ids have gaps).

Not applicable:

- COORD-01 / COORD-02 scoped and unscoped acquire, COORD-04 find locks, COORD-07 no locks
  while terminating: pydynflow has no coordinator lock API (acquire with or without a block,
  lock logs, searches by owner, `InactiveWorldError`): the engine takes and lets go of its
  few records itself. What a user sees of COORD-07 (a stopping world starts nothing new)
  is tests/test_recovery.py::test_stop_with_a_timeout_starts_nothing_more_and_says_what_was_left_running.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pydynflow import (
    Action,
    EventRejected,
    ExecutionPlan,
    PlanState,
    Result,
    Retry,
    Singleton,
    World,
)
from pydynflow.registry import class_name
from pydynflow.scheduling.executor import LOCK_CLASS as DELAYED_LOCK
from pydynflow.scheduling.executor import LOCK_ID as DELAYED_LOCK_ID
from pydynflow.storage import Storage
from pydynflow.storage.requests import world_inbox
from pydynflow.storage.singleton_lock import LOCK_CLASS as SINGLETON_LOCK
from pydynflow.storage.singleton_lock import take_singleton_lock
from tests.integration.test_client_worlds import (
    ExecutorProcess,
    _executing_worlds,
    eventually,
    suspended_step,
)
from tests.support.remote_actions import AwaitApproval, FailsThenNext, Quick
from tests.support.scenario_actions import DiesWhilePlanning

TIMEOUT = 30


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """Return a fresh shared database: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def opened() -> Iterator[list[World]]:
    """Collect the worlds a test starts; stop them afterwards, the last started first."""
    worlds: list[World] = []
    yield worlds
    for world in reversed(worlds):
        world.stop(TIMEOUT)


def start(opened: list[World], url: str, **kwargs: Any) -> World:
    """Start a world on ``url`` (a 0.2 s heartbeat, dead after 2 s of silence)."""
    world = World(url, **{"heartbeat": 0.2, "validity_timeout": 2.0, **kwargs}).start()
    opened.append(world)
    return world


def ended(world: World, plan_id: str) -> ExecutionPlan:
    """Wait until the plan is ``stopped`` (whichever world runs it); return it."""
    eventually(lambda: world.load(plan_id).state == PlanState.STOPPED, f"{plan_id} to stop")
    return world.load(plan_id)


def names(plan: ExecutionPlan) -> list[str]:
    return [entry.name for entry in plan.history]


def swept_since_now(observer: World, world_id: str) -> None:
    """Wait until the executor world ``world_id`` has had a whole heartbeat since now.

    A heartbeat refreshes the world's ``last_seen``, then invalidates the dead worlds and
    continues what the worlds that left interrupted; so once ``last_seen`` moved twice, one
    of those passes began and ended after this call began.
    """

    def last_seen() -> datetime:
        return next(info.last_seen for info in observer.worlds() if info.id == world_id)

    seen = [last_seen()]
    for _ in range(2):
        eventually(lambda: last_seen() > seen[-1], f"a heartbeat of {world_id}")
        seen.append(last_seen())


def register_silent_world(storage: Storage, world_id: str, *, silent_for: float) -> None:
    """Register a world no process stands behind, last seen ``silent_for`` seconds ago."""
    storage.register_world(
        world_id,
        name="gone",
        executor=False,
        queues={},
        pid=1,
        hostname="elsewhere",
        validity_timeout=2.0 if silent_for else 30.0,
    )
    if silent_for:
        seen = storage._dt(datetime.now(UTC) - timedelta(seconds=silent_for))
        storage.database.execute_sql(
            f"UPDATE dynflow_worlds SET last_seen = {storage.database.param} WHERE id = "
            f"{storage.database.param}",
            (seen, world_id),
        )


def freeze(process: ExecutorProcess, url: str) -> None:
    """Stop a process with SIGSTOP between two of its transactions.

    On SQLite a process stopped inside a write transaction keeps the database locked for
    every other world until it goes on (a real deployment's frozen process does too, and
    the others then fail with "database is locked"): the scenarios are about a frozen
    world, not a locked database, so it is let go on and stopped again until the write
    lock is free while it is stopped.
    """
    for _ in range(100):
        os.kill(process.process.pid, signal.SIGSTOP)
        if not url.startswith("sqlite") or _write_lock_free(url):
            return
        os.kill(process.process.pid, signal.SIGCONT)
        time.sleep(0.01)  # noqa: sleep-ok (let it finish the transaction it is in)
    raise AssertionError("the frozen process kept the SQLite write lock 100 times in a row")


def _write_lock_free(url: str) -> bool:
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:  # "database is locked": the stopped process holds it
        return False
    finally:
        connection.close()


def thaw(process: ExecutorProcess) -> None:
    """Let a process stopped with SIGSTOP go on (if it still runs)."""
    if process.process.poll() is None:
        os.kill(process.process.pid, signal.SIGCONT)


# -- DISP ------------------------------------------------------------------------------------


def test_an_event_to_a_finished_plan_is_rejected_from_every_world(
    url: str, opened: list[World]
) -> None:
    """DISP-03: with two executor worlds and two client worlds, an event to the step of a
    plan that has finished is rejected whichever world sends it (the executor that ran it,
    the other one, or a client), and changes nothing."""
    executors = [start(opened, url), start(opened, url)]
    clients = [start(opened, url, executor=False), start(opened, url, executor=False)]
    plan = clients[0].trigger(Quick).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.executing_world_id() in {world.id for world in executors}
    for sender in [*clients, *executors]:
        with pytest.raises(EventRejected, match=f"step 2 of execution plan {plan.id} is success"):
            sender.event(plan.id, 2, "finish")
        assert sender.event(plan.id, 2, "finish", optional=True) is False
    after = clients[1].load(plan.id)
    assert names(after) == ["start execution", "finish execution"]
    assert after.steps[2].output == {"done": True}


def test_a_ping_is_answered_by_a_live_executor_and_not_by_a_stopped_one(
    url: str, opened: list[World]
) -> None:
    """DISP-07: a ping to an executor world is answered while it lives; once it stopped it
    is no longer registered, and a ping to it gets no answer (it times out)."""
    executor = start(opened, url)
    # A client gives up waiting for a reply after twice its validity timeout: 1 s here.
    client = start(opened, url, executor=False, heartbeat=0.1, validity_timeout=0.5)
    assert client._client.call("ping", inbox=world_inbox(executor.id)) == executor.id
    assert client._client.call("ping") == executor.id  # any executor: the only one
    executor.stop(TIMEOUT)
    assert [info.id for info in client.worlds()] == [client.id]
    with pytest.raises(TimeoutError, match="no executor world answered the ping request"):
        client._client.call("ping", inbox=world_inbox(executor.id))


# -- REC: invalidation -----------------------------------------------------------------------


def test_an_invalidated_executor_s_plan_goes_on_elsewhere_and_its_world_writes_nothing_more(
    url: str, opened: list[World]
) -> None:
    """REC-02: an executor process stops listening (SIGSTOP) while its plan waits for an
    event; a client invalidates its world (and stores the plan paused), the other executor
    continues the plan (the suspended step runs again) and the event finishes it there. When the invalidated
    process comes back it stops on its own and writes nothing over the plan."""
    World(url).stop()  # create the database
    frozen = ExecutorProcess(url)
    try:
        client = start(opened, url, executor=False)
        triggered = client.trigger(AwaitApproval)  # the only executor runs it
        suspended_step(client, triggered.id)
        other = start(opened, url)
        freeze(frozen, url)
        assert client.invalidate(frozen.world_id) is True
        eventually(
            lambda: _executing_worlds(client.load(triggered.id))[-1] == other.id,
            "the other executor to continue the plan",
        )
        step_id = suspended_step(client, triggered.id)
        assert client.event(triggered.id, step_id, "finish") is True
        plan = triggered.wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert plan.steps[step_id].output == {"approval": "finish"}
        assert names(plan) == [
            "start execution",
            "terminate execution",  # its step was suspended: nothing ran under the death
            "pause execution",
            "start execution",
            "finish execution",
        ]
        assert plan.history[0].world_id == frozen.world_id
        # The invalidating client or the other executor (whichever takes the orphan first)
        # recovers the plan, stored paused; the other executor continues it: nothing after
        # the first entry comes from the frozen world.
        recovered_by = {entry.world_id for entry in plan.history[1:3]}
        assert len(recovered_by) == 1 and recovered_by <= {client.id, other.id}
        assert {entry.world_id for entry in plan.history[3:]} == {other.id}
        assert plan.history[2].details == {"reason": "crash"}

        thaw(frozen)  # it finds its record gone: it stops, leaving the plan to its new owner
        assert frozen.process.wait(TIMEOUT) == 0
        assert "this world was invalidated by another world" in frozen.stderr()
        after = client.load(triggered.id)
        assert (after.state, after.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert names(after) == names(plan)
        assert after.steps[step_id].state == plan.steps[step_id].state
    finally:
        thaw(frozen)
        frozen.close()


def test_an_invalidated_executor_s_plan_is_paused_when_no_other_executor_lives(
    url: str, opened: list[World]
) -> None:
    """REC-03: with no other executor alive, invalidating the world that runs a plan
    leaves the plan paused ("Abnormal termination" for what ran), not running on a world
    that is gone."""
    World(url).stop()
    frozen = ExecutorProcess(url)
    try:
        client = start(opened, url, executor=False)
        triggered = client.trigger(AwaitApproval)
        suspended_step(client, triggered.id)
        freeze(frozen, url)
        assert client.invalidate(frozen.world_id) is True
        plan = client.load(triggered.id)
        assert plan.state == PlanState.PAUSED, plan.state
        assert plan.result == Result.PENDING
        assert names(plan) == ["start execution", "terminate execution", "pause execution"]
        assert plan.history[0].world_id == frozen.world_id
    finally:
        thaw(frozen)
        frozen.close()


class BlocksTheFirstTime(Action):
    """The first run blocks until the test lets it go; the next ones end at once (and
    `Retry` runs it again after an abnormal termination)."""

    rescue = Retry(1, backoff=0.01)
    runs = 0
    started = threading.Event()
    release = threading.Event()

    def run(self) -> None:
        BlocksTheFirstTime.runs += 1
        if BlocksTheFirstTime.runs == 1:
            BlocksTheFirstTime.started.set()
            BlocksTheFirstTime.release.wait(TIMEOUT)
        self.output["runs"] = BlocksTheFirstTime.runs


def test_two_worlds_invalidating_at_once_invalidate_and_recover_once(
    url: str, opened: list[World]
) -> None:
    """REC-04: Dynflow serialises invalidations with a lock; in pydynflow a conditional
    delete of the world's record and a recovery record per plan do. Two executor worlds
    that start at the same moment find one dead world and one plan a crash left running:
    the world is invalidated once, and the plan recovered once and run again on one world."""
    BlocksTheFirstTime.runs = 0
    BlocksTheFirstTime.started.clear()
    BlocksTheFirstTime.release.clear()
    crashed = World(url, heartbeat=0.2, validity_timeout=2.0).start()
    triggered = crashed.trigger(BlocksTheFirstTime)
    assert BlocksTheFirstTime.started.wait(TIMEOUT)
    crashed.stop(timeout=0)  # as if killed: the step stays stored running, its world gone
    BlocksTheFirstTime.release.set()
    with Storage(url, create=False) as storage:
        register_silent_world(storage, "dead-world", silent_for=300)

    barrier = threading.Barrier(2)
    started: list[World] = []

    def start_at_once() -> None:
        barrier.wait(TIMEOUT)
        started.append(start(opened, url))

    with capture_logs() as logs:
        threads = [threading.Thread(target=start_at_once) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert len(started) == 2
        plan = ended(started[0], triggered.id)
    invalidations = [
        line
        for line in logs
        if line["event"] == "invalidated a dead world" and line["dead_world_id"] == "dead-world"
    ]
    assert len(invalidations) == 1, invalidations
    assert {info.id for info in started[0].worlds()} == {world.id for world in started}
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert names(plan) == [
        "start execution",
        "terminate execution",
        "pause execution",
        "start execution",
        "finish execution",
    ]
    assert plan.history[1].details == {"running": [2]}
    assert plan.history[3].world_id in {world.id for world in started}
    assert plan.steps[2].output == {"runs": 2}  # run once more, on one world


class OnlyOne(Singleton):
    """A singleton action."""

    def run(self) -> None:
        self.output["ran"] = True


class OnlyOneToo(OnlyOne):
    """Another singleton action (a lock of its own)."""


class OnlyOneThree(OnlyOne):
    """A third singleton action (a lock of its own)."""


def test_an_invalidated_world_s_singleton_locks_of_unstored_plans_are_let_go(
    url: str, opened: list[World]
) -> None:
    """REC-06 (REC-09): a world that dies while planning a singleton leaves the lock it
    took for a plan that was never stored; invalidating that world lets the lock go at
    once. The locks of a live world's planning, and those of stored plans, stay."""
    client = start(opened, url, executor=False, create=True)
    storage = client.storage
    register_silent_world(storage, "planner", silent_for=0)
    cut_short, in_progress = str(uuid.uuid4()), str(uuid.uuid4())
    assert take_singleton_lock(storage, class_name(OnlyOne), cut_short, "planner") == cut_short
    assert take_singleton_lock(storage, class_name(OnlyOneToo), in_progress, client.id) == (
        in_progress
    )
    stored = client.plan(OnlyOneThree)  # planned, and its lock said to be the planner's
    data = {"plan_id": stored.id, "world_id": "planner", "taken_at": time.time()}
    storage.put_record(
        SINGLETON_LOCK, class_name(OnlyOneThree), json.dumps(data).encode(), owner_id=stored.id
    )
    refused = client.plan(OnlyOne)
    assert (refused.state, refused.result) == (PlanState.STOPPED, Result.ERROR)
    assert cut_short in str(refused.error)

    assert client.invalidate("planner") is True
    planned = client.plan(OnlyOne)
    assert planned.state == PlanState.PLANNED
    assert storage.record_owner(SINGLETON_LOCK, class_name(OnlyOne)) == planned.id
    assert storage.record_owner(SINGLETON_LOCK, class_name(OnlyOneToo)) == in_progress
    assert storage.record_owner(SINGLETON_LOCK, class_name(OnlyOneThree)) == stored.id


def test_a_delayed_plan_a_killed_world_left_planning_is_planned_again_and_run(
    url: str, opened: list[World], tmp_path: Path
) -> None:
    """REC-07 (REC-08): the executor process holding the delayed-executor lock claims a
    delayed plan (``planning``) and dies while planning it; the world that starts next
    invalidates the dead one, takes the lock over, plans the plan again from its stored
    arguments and runs it."""
    World(url).stop()
    dying = ExecutorProcess(url)
    try:
        client = start(opened, url, executor=False)
        eventually(
            lambda: client.storage.record_owner(DELAYED_LOCK, DELAYED_LOCK_ID) == dying.world_id,
            "the executor process to hold the delayed-executor lock",
        )
        marker = tmp_path / "planned-in"
        delayed = client.delay(DiesWhilePlanning, {}, str(marker))  # due now: its holder plans
        assert dying.process.wait(TIMEOUT) == -signal.SIGKILL
        assert int(marker.read_text()) == dying.process.pid  # killed by that planning
        left = client.load(delayed.id)
        assert left.state == PlanState.PLANNING
        assert client.storage.record_owner(DELAYED_LOCK, DELAYED_LOCK_ID) == dying.world_id

        successor = start(opened, url, delayed_poll_interval=0.2)
        plan = ended(client, delayed.id)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert names(plan) == ["delay", "start execution", "finish execution"]
        assert plan.history[1].world_id == successor.id
        run_step = plan.steps[2]
        assert plan.actions[run_step.action_id].input == {"planned_in": os.getpid()}
        assert run_step.output == {"ran_in": os.getpid()}
        assert dying.world_id not in {info.id for info in client.worlds()}
        assert client.storage.record_owner(DELAYED_LOCK, DELAYED_LOCK_ID) == successor.id
    finally:
        dying.close()


def test_a_world_leaving_continues_its_interrupted_plans_not_those_paused_for_a_person(
    url: str, opened: list[World]
) -> None:
    """REC-13: a plan paused with an error waits for a person: an executor world that
    starts does not execute it, nor does it when the world that ran it leaves (while it
    continues the plan that world's stop paused)."""
    first = start(opened, url)
    failed = first.trigger(FailsThenNext).wait(TIMEOUT)
    assert (failed.state, failed.result) == (PlanState.PAUSED, Result.ERROR)
    waiting = first.trigger(AwaitApproval)
    step_id = suspended_step(first, waiting.id)
    second = start(opened, url)
    assert second.auto_executed == []  # one plan runs on a live world, one waits for a person

    first.stop(TIMEOUT)  # pauses the waiting plan ("stop") and leaves
    eventually(
        lambda: _executing_worlds(second.load(waiting.id))[-1] == second.id,
        "the second world to continue the plan the first one's stop paused",
    )
    swept_since_now(second, second.id)  # it has looked at every paused plan since
    still = second.load(failed.id)
    assert (still.state, still.result) == (PlanState.PAUSED, Result.ERROR)
    assert names(still) == ["start execution", "pause execution"]
    assert still.pause_reason() == "error"
    suspended_step(second, waiting.id)
    assert second.event(waiting.id, step_id, "go") is True
    done = ended(second, waiting.id)
    assert done.result == Result.SUCCESS
