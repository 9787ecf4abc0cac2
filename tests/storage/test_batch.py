"""`Storage.batched_transaction`: the writer's transactions, their statements sent together.

On PostgreSQL the rows go as multi-row statements held back until ``COMMIT`` (or the first
statement whose answer is needed), in as few round trips as that allows; what is committed,
what a failure leaves and what another connection sees must be what `Storage.transaction`
gives, on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, PersistenceError, PlanState
from pydynflow.plan import ExecutionPlan
from pydynflow.planning import plan_action
from pydynflow.storage import Storage, batch
from pydynflow.storage.rows import StepSnapshot
from pydynflow.storage.writer.changes import ChangeSet, write_requests


class Hop(Action):
    """A no-op step."""

    def run(self) -> None:
        pass


class Hops(Action):
    """``n`` no-op steps in sequence."""

    def plan(self, n: int = 3) -> None:
        with self.sequence():
            for i in range(n):
                self.plan_action(Hop, {"i": i})


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    storage = Storage(db_url)
    yield storage
    storage.close()


def stored_plan(storage: Storage, n: int = 3) -> ExecutionPlan:
    """Plan ``Hops(n)`` and store it whole (its run steps get rows of their own)."""
    plan = plan_action(Hops, (n,))
    storage.save_plan(plan)
    return plan


def run_states(storage: Storage, plan: ExecutionPlan) -> list[str]:
    """Return the stored states of the plan's run steps, in step order."""
    steps = storage.load_plan(plan.id).steps
    return [steps[i].state.value for i in sorted(steps) if steps[i].phase.value == "run"]


def run_steps(storage: Storage, plan: ExecutionPlan) -> list[StepSnapshot]:
    return [
        storage.step_snapshot(step)
        for step in plan.steps.values()
        if step.phase.value == "run"  # the rows of their own
    ]


TRICKY = 'q\'uote "double" back\\slash %s %(x)s ü 🙂 \n\t end'


def test_rows_written_together_read_back_as_given(storage: Storage) -> None:
    plan = stored_plan(storage)
    first, second, third = run_steps(storage, plan)
    error = {"exception_class": TRICKY, "message": TRICKY, "backtrace": [TRICKY, ""]}
    rows = [
        first._replace(queue=TRICKY, started_at=1_700_000_000_123_456, real_time=math.nan),
        second._replace(state="success", error=error, execution_time=math.inf),
        third._replace(queue="first"),  # written twice: the last one wins
        third._replace(queue="last", progress_done=0.25, attempts=2),
    ]
    with storage.batched_transaction():
        storage.write_rows(steps=[storage.step_row_of(row) for row in rows])
    loaded = storage.load_plan(plan.id).steps
    one, two, three = (loaded[row.step_id] for row in (first, second, third))
    assert one.queue == TRICKY
    if storage.dialect == "postgresql":  # (SQLite keeps no NaN: it stores NULL)
        assert math.isnan(one.real_time)  # not JSON: these rows go as VALUES
    assert one.started_at is not None and one.started_at.microsecond == 123_456
    assert two.state.value == "success" and two.execution_time == math.inf
    assert two.error is not None and two.error.message == TRICKY
    assert two.error.exception_class == TRICKY and two.error.backtrace == [TRICKY, ""]
    assert (three.queue, three.progress_done, three.attempts) == ("last", 0.25, 2)


def test_many_rows_go_in_several_statements(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "MULTI_ROWS", 2)
    plans = [stored_plan(storage, 2) for _ in range(3)]
    rows = [
        storage.step_row_of(step._replace(state="success"))
        for plan in plans
        for step in run_steps(storage, plan)
    ]
    with storage.batched_transaction():
        storage.write_rows(steps=rows)
    assert len(rows) == 6
    for plan in plans:
        assert run_states(storage, plan) == ["success", "success"]


class Sends:
    """Count what a `StatementBatch` sends to the server (one round trip each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        send = batch.StatementBatch._send

        def counted(this: batch.StatementBatch) -> None:
            self.count += 1
            send(this)

        monkeypatch.setattr(batch.StatementBatch, "_send", counted)


@pytest.mark.postgres
def test_a_transaction_of_rows_is_one_round_trip_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(postgres_url)
    try:
        plan = stored_plan(storage)
        rows = [
            storage.step_row_of(row._replace(state="success")) for row in run_steps(storage, plan)
        ]
        sends = Sends(monkeypatch)
        with storage.batched_transaction():
            storage.write_rows(steps=rows)
            storage.put_record_data("test.Record", "r1", b"data", owner_id="me")
        assert sends.count == 1
        assert storage.record("test.Record", "r1") == b"data"
        assert storage.record_owner("test.Record", "r1") == "me"
        assert run_states(storage, plan) == ["success"] * 3
    finally:
        storage.close()


def _prepared_statements(storage: Storage) -> set[str]:
    """The prepared statements of the storage's connection (this thread's), by name."""
    rows = storage.database.execute_sql("SELECT name FROM pg_prepared_statements").fetchall()
    return {str(name) for (name,) in rows}


@pytest.mark.postgres
def test_upserts_are_prepared_once_per_connection_then_executed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server parses and plans a table's upsert once per connection: the first
    transaction that writes steps prepares it, the next ones only execute it."""
    storage = Storage(postgres_url)
    try:
        plan = stored_plan(storage)
        texts: list[bytes] = []
        send = batch.StatementBatch._send

        def recorded(this: batch.StatementBatch) -> None:
            texts.extend(this.pending)
            send(this)

        monkeypatch.setattr(batch.StatementBatch, "_send", recorded)
        for state in ("running", "success"):
            rows = [storage.step_row_of(r._replace(state=state)) for r in run_steps(storage, plan)]
            with storage.batched_transaction():
                storage.write_rows(steps=rows)
        prepares = [t for t in texts if t.startswith(b"PREPARE")]
        executes = [t for t in texts if t.startswith(b"EXECUTE")]
        assert len(executes) == 2 and len(prepares) <= 1  # at most once (none if prepared)
        assert storage._step_upsert.name in _prepared_statements(storage)
        assert run_states(storage, plan) == ["success"] * 3
    finally:
        storage.close()


@pytest.mark.postgres
def test_a_transaction_that_fails_before_its_prepare_prepares_again_next_time(
    postgres_url: str,
) -> None:
    """A query string that fails before its ``PREPARE`` ran leaves no prepared statement:
    the next transaction on the connection prepares it. (One that fails after it leaves it
    prepared, and the next one executes it: `test_a_failing_statement_rolls_all_back...`.)"""
    storage = Storage(postgres_url)
    try:
        plan = stored_plan(storage)
        storage.database.execute_sql("DEALLOCATE ALL")  # a connection that prepared nothing
        batch._prepared.pop(storage.database.connection(), None)
        rows = [storage.step_row_of(r._replace(state="success")) for r in run_steps(storage, plan)]
        with pytest.raises(PersistenceError), storage.batched_transaction():
            storage.put_record_data("test.Record", "r1", b"x", owner_id="me")
            storage._local.batch.write("SELECT 1/0", ())  # fails before the upsert's PREPARE
            storage.write_rows(steps=rows)
        assert storage._step_upsert.name not in _prepared_statements(storage)
        with storage.batched_transaction():
            storage.write_rows(steps=rows)
        assert storage._step_upsert.name in _prepared_statements(storage)
        assert run_states(storage, plan) == ["success"] * 3
    finally:
        storage.close()


@pytest.mark.postgres
def test_a_claim_is_sent_with_the_rows_before_it_and_sees_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(postgres_url)
    try:
        plan = stored_plan(storage)
        plan.transition(PlanState.RUNNING)
        plan.transition(PlanState.PAUSED)
        paused = storage.plan_row_of(storage.plan_snapshot(plan))[1]
        sends = Sends(monkeypatch)
        with storage.batched_transaction():
            storage.write_rows(plans=[paused])
            assert storage.claim_plan(plan.id, ("paused",)) is True  # it sees the pause
            assert storage.claim_plan(plan.id, ("paused",)) is False  # and its own claim
            storage.put_record_data("test.Record", "r2", b"x")
        assert sends.count == 3  # the rows with the first claim, the second, the commit
        assert storage.load_plan(plan.id).state == PlanState.RUNNING
    finally:
        storage.close()


def other_reader(url: str) -> Storage:
    return Storage(url, migrate=False)


def test_nothing_is_visible_to_others_before_the_commit(storage: Storage, db_url: str) -> None:
    if storage.in_memory:
        pytest.skip("one in-memory database per storage")
    plan = stored_plan(storage)
    rows = [storage.step_row_of(row._replace(state="success")) for row in run_steps(storage, plan)]
    seen: list[Any] = []
    other = other_reader(db_url)
    try:
        with storage.batched_transaction():
            storage.write_rows(steps=rows)
            storage.claim_plan(plan.id, ("planned",))  # sends the rows (PostgreSQL)
            seen.append(other.step_state(plan.id, rows[0][1]))
            seen.append(other.step_state(plan.id))
        seen.append(other.step_state(plan.id, rows[0][1]))
        seen.append(other.step_state(plan.id))
    finally:
        other.close()
    assert seen == ["pending", "planned", "success", "running"]


def test_a_failing_statement_rolls_all_back_and_the_storage_serves_on(
    storage: Storage,
) -> None:
    plan = stored_plan(storage)
    good = [storage.step_row_of(row._replace(state="success")) for row in run_steps(storage, plan)]
    orphan = storage.step_row_of(run_steps(storage, plan)[0]._replace(plan_id="no-such-plan"))
    with pytest.raises(PersistenceError), storage.batched_transaction():
        storage.put_record_data("test.Record", "r3", b"lost")
        storage.write_rows(steps=[*good, orphan])  # a foreign key fails
    assert storage.record("test.Record", "r3") is None
    assert run_states(storage, plan) == ["pending"] * 3
    with storage.batched_transaction():  # the same storage, the same thread: it goes on
        storage.write_rows(steps=good)
        storage.put_record_data("test.Record", "r3", b"kept")
    assert storage.record("test.Record", "r3") == b"kept"


def test_an_error_after_rows_were_sent_rolls_them_back(storage: Storage) -> None:
    plan = stored_plan(storage)
    rows = [storage.step_row_of(row._replace(state="success")) for row in run_steps(storage, plan)]
    with pytest.raises(RuntimeError, match="changed my mind"), storage.batched_transaction():
        storage.write_rows(steps=rows)
        assert storage.claim_plan(plan.id, ("planned",))  # sent (PostgreSQL)
        raise RuntimeError("changed my mind")
    assert storage.load_plan(plan.id).state == PlanState.PLANNED
    assert run_states(storage, plan) == ["pending"] * 3
    with storage.batched_transaction():
        assert storage.claim_plan(plan.id, ("planned",))
    assert storage.load_plan(plan.id).state == PlanState.RUNNING


def test_write_requests_store_events_and_answer_claims_in_one_transaction(
    storage: Storage,
) -> None:
    plan = stored_plan(storage)
    requests = [
        ChangeSet(envelope_add=((plan.id, 2, {"n": 1}), (plan.id, 2, {"n": 2}))),
        ChangeSet(claim=(plan.id, ("planned",))),
        ChangeSet(claim=(plan.id, ("planned",))),  # refused: the first moved it
        ChangeSet(envelope_pop=((plan.id, 2),)),
        ChangeSet(records_delete=(("test.Lock", "l1", "me"),)),
    ]
    storage.put_record("test.Lock", "l1", b"", owner_id="me")
    assert write_requests(storage, requests) == {2}
    assert [payload for _, _, payload in storage.envelopes(plan.id)] == [{"n": 2}]
    assert storage.load_plan(plan.id).state == PlanState.RUNNING
    assert storage.record("test.Lock", "l1") is None


def test_a_change_set_s_requests_are_stored_with_its_rows_or_not_at_all(
    storage: Storage,
) -> None:
    """A client world stores a fresh plan and the request that has it executed as one
    change set: both are committed, or (a change of the transaction failing) neither."""
    fresh = plan_action(Hops, (2,))
    request = {"kind": "execute", "sender": "client", "plan_id": fresh.id}
    snapshot = storage.plan_snapshot(fresh, full=True, new=True)
    write_requests(storage, [ChangeSet(plans=(snapshot,), posts=(("executors", request),))])
    assert storage.load_plan(fresh.id).state == PlanState.PLANNED
    assert [data for _, _, data in storage.inbox(["executors"])] == [request]

    other = plan_action(Hops, (2,))
    orphan = run_steps(storage, other)[0]  # its plan row is not written: a foreign key fails
    failing = ChangeSet(
        plans=(),
        steps=(orphan,),
        posts=(("executors", {**request, "plan_id": other.id}),),
    )
    with pytest.raises(PersistenceError):
        write_requests(storage, [failing])
    assert [data for _, _, data in storage.inbox(["executors"])] == [request]


@pytest.mark.postgres
def test_a_connection_lost_in_a_batched_transaction_is_a_passing_failure(
    postgres_url: str,
) -> None:
    import peewee
    import psycopg2

    storage = Storage(postgres_url)
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    try:
        plan = stored_plan(storage)
        victim = storage.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(PersistenceError) as lost, storage.batched_transaction():
            storage.put_record_data("test.Record", "r4", b"lost")
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", (victim,))
        assert isinstance(
            lost.value.__cause__, (peewee.OperationalError, psycopg2.OperationalError)
        )
        with storage.batched_transaction():  # on a new connection
            storage.put_record_data("test.Record", "r4", b"kept")
            assert storage.claim_plan(plan.id, ("planned",))
        assert storage.record("test.Record", "r4") == b"kept"
    finally:
        admin.close()
        storage.close()
