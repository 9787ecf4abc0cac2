"""The persistence actor's writers: a supervised child process, or the actor's own thread."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pydynflow import Action, PersistenceError, PlanState, Result, World
from pydynflow.errors import FatalPersistenceError
from pydynflow.planning import plan_action
from pydynflow.storage import Storage
from pydynflow.storage.rows import StepSnapshot
from pydynflow.storage.writer import (
    EXIT_AFTER_COMMITS,
    EXIT_AT_START,
    GROUP_REQUESTS_MAX,
    GROUP_REQUESTS_MIN,
    LEDGER,
    MAX_DELIVERIES,
    ChangeSet,
    ProcessWriter,
    ThreadWriter,
    writer_cpus,
    writer_for,
)
from pydynflow.storage.writer.changes import write_requests
from pydynflow.storage.writer.commit import commit
from pydynflow.storage.writer.ledger import Ledger
from pydynflow.storage.writer.pacer import Pacer
from pydynflow.storage.writer.pipe import MessageReader


class Hop(Action):
    """A no-op step."""

    def run(self, event: Any = None) -> None:
        pass


class Hops(Action):
    """``n`` no-op steps in sequence."""

    def plan(self, n: int = 3) -> None:
        with self.sequence():
            for i in range(n):
                self.plan_action(Hop, {"i": i})


# A change set with a step row of a plan that does not exist: it breaks the foreign key.
BROKEN = ChangeSet(
    steps=(
        StepSnapshot("no-such-plan", 1, 1, "pending", "run", None, None, 0.0, 0.0, 0.0, 1.0, 0,
                     "default", "x.Hop", None, (), 0),
    ),
)  # fmt: skip


def writer_of(world: World) -> Any:
    return world._runtime.persistence.proxy().writer.get()  # type: ignore[union-attr]


def test_a_file_database_is_written_by_a_child_process(sqlite_url: str) -> None:
    with World(sqlite_url) as world:
        writer = writer_of(world)
        assert isinstance(writer, ProcessWriter)
        assert writer.pid is not None and writer.pid != os.getpid()
        plan = world.trigger(Hops, 3).wait(30)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        pid = writer.pid
    assert writer.pid is None  # closed with the world
    with pytest.raises(ProcessLookupError):  # reaped, not left behind
        os.kill(pid, 0)


def test_an_in_memory_database_is_written_on_the_persistence_thread(memory_url: str) -> None:
    with World(memory_url) as world:
        assert isinstance(writer_of(world), ThreadWriter)
        plan = world.trigger(Hops, 2).wait(30)
        assert plan.result == Result.SUCCESS


def test_the_environment_can_force_the_thread_writer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDYNFLOW_PERSISTENCE", "thread")
    storage = Storage(sqlite_url)
    try:
        assert isinstance(writer_for(storage), ThreadWriter)
    finally:
        storage.close()


def test_a_killed_writer_is_replaced_and_no_change_is_lost(sqlite_url: str) -> None:
    with World(sqlite_url) as world:
        writer = writer_of(world)
        first = world.trigger(Hops, 3).wait(30)
        old = writer.pid
        os.kill(old, signal.SIGKILL)
        os.waitpid(old, 0) if False else None  # reaped by the writer itself
        second = world.trigger(Hops, 3).wait(30)
        assert writer.pid not in (None, old)
        assert writer.restarts == 1
    with World(sqlite_url, executor=False) as reader:
        for plan in (first, second):
            stored = reader.load(plan.id)
            assert (stored.state, stored.result) == (PlanState.STOPPED, Result.SUCCESS)


def test_a_writer_that_cannot_open_the_database_fails_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'not-there' / 'x.db'}"  # its directory does not exist
    writer = ProcessWriter(url)
    try:
        with pytest.raises(PersistenceError, match="could not open the database"):
            writer.wait_ready()
    finally:
        writer.close()


def test_a_failed_transaction_comes_back_as_a_persistence_error(sqlite_url: str) -> None:
    Storage(sqlite_url).close()  # migrated
    writer = ProcessWriter(sqlite_url)
    try:
        writer.wait_ready()
        with pytest.raises(PersistenceError, match="FOREIGN KEY"):
            writer.write([BROKEN])
        assert writer.write([ChangeSet()]) == set()  # still serving
    finally:
        writer.close()


def test_postgresql_is_written_by_a_child_process(postgres_url: str) -> None:
    with World(postgres_url) as world:
        assert isinstance(writer_of(world), ProcessWriter)
        plan = world.trigger(Hops, 3).wait(30)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert world.load(plan.id).result == Result.SUCCESS


def test_a_world_whose_writer_cannot_start_fails_to_start_and_leaves_nothing_running(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = f"sqlite:///{tmp_path / 'not-there' / 'x.db'}"
    monkeypatch.setattr(
        "pydynflow.actors.persistence.writer_for",
        lambda storage, owner, **_: ProcessWriter(broken),
    )
    threads = set(threading.enumerate())  # (other tests' may still be ending)
    world = World(sqlite_url, executor="processes", pool_size=1)  # workers start at once
    with pytest.raises(PersistenceError, match="could not open the database"):
        world.start()
    left = set(threading.enumerate()) - threads
    assert not left, sorted(t.name for t in left)  # no dispatcher, pool or writer left


# -- the child's group commit ----------------------------------------------------------------


def envelope_request(plan_id: str, step_id: int) -> ChangeSet:
    """A change set that stores one event (the envelopes table has no foreign key)."""
    return ChangeSet(envelope_add=((plan_id, step_id, {"n": step_id}),))


REFUSED_CLAIM = ChangeSet(claim=("no-such-plan", ("planned",)))


class Acks:
    """Collect ``done`` calls of submitted batches, in the order they come."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[int], Any]] = []
        self.lock = threading.Lock()

    def done_for(self, name: str) -> Any:
        def done(refused: set[int], error: Any) -> None:
            with self.lock:
                self.calls.append((name, refused, error))

        return done


def stopped(writer: ProcessWriter) -> Any:
    """Freeze the child (SIGSTOP) until the block ends: what is sent meanwhile waits in the
    pipe, so the child finds it all at once."""

    class Frozen:
        def __enter__(self) -> None:
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGSTOP)

        def __exit__(self, *exc: object) -> None:
            if writer.pid is not None:
                os.kill(writer.pid, signal.SIGCONT)

    return Frozen()


def stored_events(url: str) -> list[tuple[int, int, Any]]:
    """Return the events stored for plan ``p`` (what the writer committed), read afresh."""
    storage = Storage(url)
    try:
        return storage.envelopes("p")
    finally:
        storage.close()


def open_writer(url: str) -> ProcessWriter:
    Storage(url).close()  # migrated
    writer = ProcessWriter(url)
    writer.wait_ready()
    return writer


def test_batches_waiting_in_the_pipe_share_one_transaction_and_are_acked_in_order(
    sqlite_url: str,
) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        before = writer.transactions
        with stopped(writer):
            writer.submit([envelope_request("p", 1), REFUSED_CLAIM], acks.done_for("a"))
            writer.submit([REFUSED_CLAIM, envelope_request("p", 2)], acks.done_for("b"))
            for n in range(3, 20):
                writer.submit([envelope_request("p", n)], acks.done_for(f"c{n}"))
        assert writer.drain(30)
        assert writer.transactions - before == 1  # 19 batches, one commit
        names = [name for name, _, _ in acks.calls]
        assert names == ["a", "b", *(f"c{n}" for n in range(3, 20))]
        assert acks.calls[0][1:] == ({1}, None)  # each batch learns its own refused claims
        assert acks.calls[1][1:] == ({0}, None)
        assert all(refused == set() and error is None for _, refused, error in acks.calls[2:])
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == list(range(1, 20))


def test_batches_in_flight_when_the_child_dies_are_committed_by_the_next(sqlite_url: str) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        old = writer.pid
        assert old is not None
        with stopped(writer):
            for n in range(1, 11):
                writer.submit([envelope_request("p", n)], acks.done_for(str(n)))
            os.kill(old, signal.SIGKILL)
        assert writer.drain(60)
        assert [(name, error) for name, _, error in acks.calls] == [
            (str(n), None) for n in range(1, 11)
        ]
        assert writer.restarts == 1 and writer.pid not in (None, old)
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == list(range(1, 11))


def test_close_commits_what_was_sent_before_the_child_exits(sqlite_url: str) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    with stopped(writer):
        for n in range(1, 6):
            writer.submit([envelope_request("p", n)], acks.done_for(str(n)))
    writer.close()  # the child exits the moment its input closes: only after the acks
    assert [(name, error) for name, _, error in acks.calls] == [(str(n), None) for n in range(1, 6)]
    assert len(stored_events(sqlite_url)) == 5


def test_a_locked_database_is_retried_and_a_broken_row_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=0"  # "database is locked" at once
    storage = Storage(url)
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock, say
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the backoff: the other side lets go meanwhile
        pauses.append(seconds)
        if holder.in_transaction:
            holder.execute("ROLLBACK")

    monkeypatch.setattr("pydynflow.storage.writer.commit.time.sleep", pause)
    try:
        assert commit(storage, [envelope_request("p", 1)]) == (set(), None)
        assert pauses == [0.01]  # failed once, locked; committed on the second attempt
        refused, error = commit(storage, [BROKEN])
        assert error is not None and "FOREIGN KEY" in error
        assert pauses == [0.01]  # not retried: it would fail the same way
    finally:
        holder.close()
        storage.close()


# -- where the writer runs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("", None), (" 1 ", {1}), ("0,2", {0, 2}), ("2-3,5", {2, 3, 5}), ("4-4", {4})],
)
def test_writer_cpus_reads_a_cpu_list(
    text: str, cpus: set[int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDYNFLOW_WRITER_CPUS", text)
    assert writer_cpus() == cpus


@pytest.mark.parametrize("text", ["one", "3-1", "-2", "1,,2", "1-x"])
def test_a_bad_writer_cpu_list_fails_the_start_naming_the_variable(
    text: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDYNFLOW_WRITER_CPUS", text)
    world = World(sqlite_url)
    with pytest.raises(ValueError, match="PYDYNFLOW_WRITER_CPUS=.* is not a CPU list"):
        world.start()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_the_writer_process_runs_on_the_cpus_it_is_given(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = max(os.sched_getaffinity(0))  # one this process may use
    monkeypatch.setenv("PYDYNFLOW_WRITER_CPUS", str(cpu))
    with World(sqlite_url) as world:
        writer = writer_of(world)
        assert writer.pid is not None
        assert os.sched_getaffinity(writer.pid) == {cpu}
        assert world.trigger(Hops, 2).wait(30).result == Result.SUCCESS


def test_a_bad_batch_fails_alone_when_it_shares_a_transaction(sqlite_url: str) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        with stopped(writer):  # the three batches meet in one group
            writer.submit([envelope_request("p", 1)], acks.done_for("before"))
            writer.submit([BROKEN], acks.done_for("bad"))
            writer.submit([envelope_request("p", 2)], acks.done_for("after"))
        assert writer.drain(30)
        outcome = {name: error for name, _, error in acks.calls}
        assert outcome["before"] is None and outcome["after"] is None
        assert "FOREIGN KEY" in str(outcome["bad"])
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == [1, 2]


# -- a child that dies after committing, before answering --------------------------------


def dies_after_its_first_commit(url: str, monkeypatch: pytest.MonkeyPatch) -> ProcessWriter:
    """Open a writer whose first child exits right after its first commit, unanswered; the
    children that replace it run normally."""
    monkeypatch.setenv(EXIT_AFTER_COMMITS, "1")
    writer = open_writer(url)  # the child read the variable when it started
    monkeypatch.delenv(EXIT_AFTER_COMMITS)
    return writer


def claim_of(plan_id: str) -> ChangeSet:
    return ChangeSet(claim=(plan_id, ("planned",)))


def test_a_claim_committed_by_a_child_that_died_unanswered_is_not_refused_by_the_next(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(sqlite_url)
    plan = plan_action(Hops, (2,))
    storage.save_plan(plan)
    storage.close()
    writer = dies_after_its_first_commit(sqlite_url, monkeypatch)
    acks = Acks()
    try:
        first = writer.pid
        writer.submit([claim_of(plan.id)], acks.done_for("claim"))
        assert writer.drain(60)
        # The first child committed the claim and exited; the batch went to the next child,
        # which answered it from the ledger instead of claiming again (and being refused).
        assert writer.restarts == 1 and writer.pid != first
        assert acks.calls == [("claim", set(), None)]
        # A claim the ledger does not hold is still decided by the database.
        writer.submit([claim_of(plan.id)], acks.done_for("again"))
        assert writer.drain(60)
        assert acks.calls[1] == ("again", {0}, None)
    finally:
        writer.close()
    storage = Storage(sqlite_url)
    try:
        assert storage.step_state(plan.id) == "running"
        assert storage.record(LEDGER, writer.key) is None  # a clean close deletes it
    finally:
        storage.close()


def ledger_owners(url: str) -> list[tuple[str, str | None]]:
    """Return (id, owner_id) of the writers' ledger records, read with plain sqlite3."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return list(
            conn.execute(
                'SELECT "id", "owner_id" FROM "dynflow_coordinator_records" WHERE "class" = ?',
                (LEDGER,),
            )
        )


def test_a_worlds_writer_ledger_is_owned_by_the_world(sqlite_url: str) -> None:
    """Its record names the world (so a dead world's record can be found) and goes with it."""
    world = World(sqlite_url, auto_execute=False)
    world.start()
    try:
        plan = world.trigger(Hops, 2).wait(60)
        assert plan.result == Result.SUCCESS
        assert [owner for _, owner in ledger_owners(sqlite_url)] == [world.id]
    finally:
        world.stop()
    assert ledger_owners(sqlite_url) == []


def test_an_event_pop_committed_by_a_child_that_died_unanswered_is_not_applied_twice(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(sqlite_url)
    for n in (1, 2):
        storage.add_envelope("p", 7, {"n": n})
    storage.close()
    writer = dies_after_its_first_commit(sqlite_url, monkeypatch)
    acks = Acks()
    pop = ChangeSet(envelope_pop=(("p", 7),))
    try:
        writer.submit([pop], acks.done_for("pop"))
        assert writer.drain(60)
        assert writer.restarts == 1
        assert acks.calls == [("pop", set(), None)]
    finally:
        writer.close()
    assert [payload for _, _, payload in stored_events(sqlite_url)] == [{"n": 2}]


@pytest.mark.parametrize("commits", [1, 2, 3])
def test_plans_run_once_through_a_writer_that_dies_after_a_commit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, commits: int
) -> None:
    # Commit 1 stores the plan, 2 claims it for execution (a conditional update: written
    # twice, it would be refused by its own first write), 3 moves its first steps along.
    # Whichever one the first child dies after, unanswered, the next child answers it from
    # the ledger.
    monkeypatch.setenv(EXIT_AFTER_COMMITS, str(commits))
    with World(sqlite_url) as world:
        monkeypatch.delenv(EXIT_AFTER_COMMITS)  # for the children that replace the first
        planned = world.plan(Hops, 3)
        plan = world.execute(planned.id).wait(60)
        assert writer_of(world).restarts == 1
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    with World(sqlite_url, executor=False) as reader:
        stored = reader.load(plan.id)
        assert (stored.state, stored.result) == (PlanState.STOPPED, Result.SUCCESS)
        run_steps = [step for step in stored.steps.values() if step.phase.value == "run"]
        assert [step.state.value for step in run_steps] == ["success"] * 3


# -- how many requests a transaction takes ----------------------------------------------------


def test_the_pacer_sizes_transactions_by_what_a_commit_costs() -> None:
    pacer = Pacer()
    assert pacer.budget() == GROUP_REQUESTS_MAX  # nothing measured: whatever is waiting
    pacer.observe(100, work=0.002, commit=0.0004)  # 20 us a request, 0.4 ms a commit
    assert pacer.budget() == 4 * 20  # writing takes about four commits' time
    for _ in range(40):  # a slow disk: 10 ms a commit
        pacer.observe(100, work=0.002, commit=0.010)
    assert 4 * 450 <= pacer.budget() <= 4 * 500
    for _ in range(40):  # commits cheaper than writing a single request
        pacer.observe(10, work=0.010, commit=0.0001)
    assert pacer.budget() == GROUP_REQUESTS_MIN


def test_waiting_messages_beyond_the_budget_stay_for_the_next_group() -> None:
    read, write = os.pipe()
    try:
        for size in (3, 4, 5, 1):
            message = bytes([size]) * size
            os.write(write, len(message).to_bytes(4, "big") + message)
        reader = MessageReader(read)
        first = reader.next()
        assert reader.waiting(10, budget=8) == [b"\x04" * 4]  # 4 fits, then 5 would not
        assert reader.waiting(10) == [b"\x05" * 5, b"\x01"]  # the held one comes first
        assert first == b"\x03" * 3
    finally:
        os.close(read)
        os.close(write)


def test_a_batch_that_failed_alone_is_not_taken_for_committed_by_the_next_child(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three batches in one group; the group fails on the broken one, so each is committed
    # on its own: the first and the last commit, the middle fails. The child then dies
    # before replying (after its second commit). The next child must answer the first and
    # the last from the ledger (not write their events again) and try the middle again.
    monkeypatch.setenv(EXIT_AFTER_COMMITS, "2")
    writer = open_writer(sqlite_url)
    monkeypatch.delenv(EXIT_AFTER_COMMITS)
    acks = Acks()
    try:
        with stopped(writer):
            writer.submit([envelope_request("p", 1)], acks.done_for("a"))
            writer.submit([BROKEN], acks.done_for("b"))
            writer.submit([envelope_request("p", 3)], acks.done_for("c"))
        assert writer.drain(60)
        assert writer.restarts == 1
        assert [(name, refused) for name, refused, _ in acks.calls] == [
            ("a", set()),
            ("b", set()),
            ("c", set()),
        ]
        errors = [error for _, _, error in acks.calls]
        assert errors[0] is None and errors[2] is None
        assert isinstance(errors[1], PersistenceError) and "FOREIGN KEY" in str(errors[1])
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == [1, 3]


def test_the_ledger_holds_exactly_the_batches_done(sqlite_url: str) -> None:
    storage = Storage(sqlite_url)
    try:
        ledger = Ledger(storage, "k")
        with storage.transaction():  # a group of 1 and 2, the claim of 2 refused
            ledger.recorder([1, 2], [1, 1])({1})
        ledger.committed()
        ledger.answered([1, 2])
        # The next group, 3-5, failed as a whole; 3 and 5 were committed alone, 4 failed.
        for number in (3, 5):
            with storage.transaction():
                ledger.recorder([number], [1])(set())
            ledger.committed()
        successor = Ledger(storage, "k")  # what the next child reads
        assert [n for n in range(1, 8) if successor.holds(n)] == [1, 2, 3, 5]
        assert successor.answer(2) == (set(), None, False)  # answered already: not kept
        ledger.answered([3, 4, 5])  # 4's error was answered too
        with storage.transaction():
            ledger.recorder([6], [1])({0})
        successor = Ledger(storage, "k")
        assert (successor.up_to, successor.above) == (6, set())
        assert successor.answer(6) == ({0}, None, False)
    finally:
        storage.close()


def test_the_ledger_tells_whether_an_attempt_whose_answer_was_lost_committed(
    sqlite_url: str,
) -> None:
    storage = Storage(sqlite_url)
    try:
        ledger = Ledger(storage, "k")
        assert ledger.landed() is None  # nothing attempted
        with pytest.raises(RuntimeError), storage.transaction():
            ledger.recorder([1], [1])({0})
            raise RuntimeError("rolled back")
        assert ledger.landed() is None
        with storage.transaction():  # committed, but (say) the connection broke at COMMIT
            ledger.recorder([1], [1])({0})
        assert ledger.landed() == {0}
        ledger.committed()
        assert ledger.landed() is None  # known: nothing in doubt
    finally:
        storage.close()


# -- a replacement that dies while it starts ---------------------------------------------


def die_at_start(tokens: Path, children: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next ``children`` writer processes started kill themselves before they are
    ready (each takes one token)."""
    tokens.mkdir(exist_ok=True)
    for n in range(children):
        (tokens / str(n)).touch()
    monkeypatch.setenv(EXIT_AT_START, str(tokens))


def test_batches_in_flight_outlive_a_replacement_killed_while_it_starts(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        old = writer.pid
        assert old is not None
        die_at_start(tmp_path / "tokens", 1, monkeypatch)
        with stopped(writer):
            for n in range(1, 11):
                writer.submit([envelope_request("p", n)], acks.done_for(str(n)))
            os.kill(old, signal.SIGKILL)
        assert writer.drain(60)
        assert [(name, error) for name, _, error in acks.calls] == [
            (str(n), None) for n in range(1, 11)
        ]
        assert writer.restarts == 2  # the first replacement died; the second committed
        assert list((tmp_path / "tokens").iterdir()) == []
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == list(range(1, 11))


def test_batches_fail_once_max_deliveries_children_died_under_them_and_the_writer_serves_on(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        old = writer.pid
        assert old is not None
        die_at_start(tmp_path / "tokens", MAX_DELIVERIES - 1, monkeypatch)
        with stopped(writer):
            for n in range(1, 4):
                writer.submit([envelope_request("p", n)], acks.done_for(str(n)))
            os.kill(old, signal.SIGKILL)
        assert writer.drain(60)
        assert [name for name, _, _ in acks.calls] == ["1", "2", "3"]
        for _, _, error in acks.calls:
            assert type(error) is PersistenceError
            assert f"{MAX_DELIVERIES} writer processes in a row died" in str(error)
        assert writer.write([envelope_request("p", 4)]) == set()  # a new child, on demand
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(sqlite_url)] == [4]


# -- riding out a database that cannot be written --------------------------------------


def locked(path: Path) -> sqlite3.Connection:
    """Return a connection holding the write lock of the SQLite file at ``path`` (another
    process's, say); roll it back to let go."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def retry_warned(seen: threading.Event) -> Any:
    """Return a structlog processor that sets ``seen`` on a writer's retry warning."""

    def processor(logger: Any, method: str, event_dict: Any) -> Any:
        if "retrying the transaction" in str(event_dict.get("event")):
            seen.set()
        return event_dict

    return processor


def retried_for(error: BaseException) -> float:
    """Return how long a `FatalPersistenceError` says its transaction was retried."""
    found = re.search(r"could not be written for (\d+\.\d) s", str(error))
    assert found is not None, error
    return float(found.group(1))


def test_a_database_locked_past_the_fatal_timeout_fails_for_good_and_says_so_once(
    tmp_path: Path,
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=0")  # locked: fails at once
    holder = locked(tmp_path / "x.db")
    fatal: list[BaseException] = []
    writer = ThreadWriter(storage, fatal_timeout=0.3, on_fatal=fatal.append)
    try:
        with capture_logs() as logs:
            with pytest.raises(FatalPersistenceError) as first:
                writer.write([envelope_request("p", 1)])
            with pytest.raises(FatalPersistenceError):
                writer.write([envelope_request("p", 2)])
        assert 0.3 <= retried_for(first.value) < 1.3
        assert "database is locked" in str(first.value)  # the cause, named
        assert fatal == [first.value]  # once, with the first
        warnings = [line for line in logs if line["log_level"] == "warning"]
        assert len(warnings) == 2  # at most one a second, for each transaction
        assert warnings[0]["attempts"] == 1 and "database is locked" in warnings[0]["cause"]
        holder.execute("ROLLBACK")
        assert writer.write([envelope_request("p", 3)]) == set()  # serves on
    finally:
        holder.close()
        storage.close()


def test_a_process_writer_holds_the_acks_while_the_database_is_locked_then_commits(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=0"
    Storage(url).close()
    fatal: list[BaseException] = []
    writer = ProcessWriter(url, on_fatal=fatal.append)
    writer.wait_ready()
    holder = locked(tmp_path / "x.db")
    acks = Acks()
    seen = threading.Event()
    try:
        with capture_logs(processors=[retry_warned(seen)]):
            writer.submit([envelope_request("p", 1)], acks.done_for("a"))
            writer.submit([envelope_request("p", 2)], acks.done_for("b"))
            assert seen.wait(30)  # the child told the world it is retrying
            assert acks.calls == []  # nothing answered while its transaction is retried
            holder.execute("ROLLBACK")
            assert writer.drain(30)
        assert [(name, error) for name, _, error in acks.calls] == [("a", None), ("b", None)]
        assert fatal == [] and writer.restarts == 0
    finally:
        holder.close()
        writer.close()
    assert [step for _, step, _ in stored_events(url)] == [1, 2]


def test_a_process_writer_fails_batches_for_good_after_its_fatal_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}?busy_timeout=0"
    Storage(url).close()
    fatal: list[tuple[BaseException, str]] = []
    writer = ProcessWriter(
        url,
        fatal_timeout=0.5,
        on_fatal=lambda error: fatal.append((error, threading.current_thread().name)),
    )
    writer.wait_ready()
    holder = locked(tmp_path / "x.db")
    acks = Acks()
    try:
        writer.submit_all([([envelope_request("p", n)], acks.done_for(str(n))) for n in (1, 2)])
        assert writer.drain(30)
        errors = [error for _, _, error in acks.calls]
        assert all(isinstance(error, FatalPersistenceError) for error in errors)
        assert 0.5 <= retried_for(errors[0]) < 1.5
        assert "database is locked" in str(errors[0])
        assert fatal == [(errors[0], "pydynflow-writer-replies")]  # once, from the reader
        holder.execute("ROLLBACK")
        assert writer.write([envelope_request("p", 3)]) == set()  # the same child serves on
        assert writer.restarts == 0
    finally:
        holder.close()
        writer.close()
    assert [step for _, step, _ in stored_events(url)] == [3]


def test_a_batch_that_cannot_be_pickled_fails_alone(sqlite_url: str) -> None:
    writer = open_writer(sqlite_url)
    acks = Acks()
    try:
        unpicklable = ChangeSet(envelope_add=(("p", 1, lambda: None),))
        writer.submit_all(
            [
                ([envelope_request("p", 1)], acks.done_for("before")),
                ([unpicklable], acks.done_for("broken")),
                ([envelope_request("p", 2)], acks.done_for("after")),
            ]
        )
        assert writer.drain(30)
    finally:
        writer.close()
    errors = {name: error for name, _, error in acks.calls}
    assert errors["before"] is None and errors["after"] is None
    assert isinstance(errors["broken"], PersistenceError)
    assert "cannot be sent to the writer" in str(errors["broken"])
    assert [step for _, step, _ in stored_events(sqlite_url)] == [1, 2]


def test_a_claim_sees_the_plan_as_earlier_requests_of_its_transaction_left_it(
    sqlite_url: str,
) -> None:
    """A recovery pausing a plan and the claim that runs it again can share a transaction:
    the claim must see the pause (it was refused, and the plan reported running)."""
    from pydynflow.actors.messages import Claim
    from pydynflow.actors.persistence import changes, request_of

    with World(sqlite_url, executor=False, create=True) as client:
        plan = client.plan(Hops, 1)
    storage = Storage(sqlite_url)
    try:
        plan.transition(PlanState.RUNNING)
        storage.save_plan_row(plan)  # stored running: its world died
        plan.transition(PlanState.PAUSED)
        recovery = request_of(changes(storage, plan=plan))
        plan.transition(PlanState.RUNNING)
        claim = Claim(plan.id, (PlanState.PLANNED.value, PlanState.PAUSED.value))
        start = request_of(changes(storage, plan=plan, claim=claim))
        assert write_requests(storage, [recovery, start]) == set()
        assert storage.load_plan(plan.id).state == PlanState.RUNNING
    finally:
        storage.close()
