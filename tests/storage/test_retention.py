"""`Storage.delete_plans_where`: batches as separate transactions, every row of a plan gone,
and the plans kept whatever the selection says (on SQLite file, memory and PostgreSQL).

Transactions are observed in the database itself: on SQLite through the connection's
statement trace (``BEGIN IMMEDIATE`` ... ``COMMIT``, with the ids each ``DELETE`` names), on
PostgreSQL through a trigger that records the transaction id of every deleted plan row.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from pydynflow.plan import ExecutionPlan
from pydynflow.states import PlanState
from pydynflow.storage import Storage
from pydynflow.storage.retention import (
    FIRST_BATCH,
    DeletedBatch,
    PlanSelection,
    next_batch_size,
)
from tests.storage.test_contract import make_plan

STOPPED = PlanSelection(states=("stopped",))
PLAN_TABLES = (
    "dynflow_actions",
    "dynflow_steps",
    "dynflow_output_chunks",
    "dynflow_delayed_plans",
)


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    with Storage(db_url) as opened:
        yield opened


def stopped_plan(plan_id: str, **fields: object) -> ExecutionPlan:
    return make_plan(plan_id, state=PlanState.STOPPED, **fields)  # type: ignore[arg-type]


def count(storage: Storage, sql: str, *params: object) -> int:
    cursor = storage.database.cursor()
    cursor.execute(sql.replace("?", storage.database.param), params)
    return int(cursor.fetchone()[0])


def ids(storage: Storage) -> set[str]:
    cursor = storage.database.cursor()
    cursor.execute("SELECT uuid FROM dynflow_execution_plans")
    return {row[0] for row in cursor.fetchall()}


@contextmanager
def deleted_per_transaction(storage: Storage) -> Iterator[list[list[str]]]:
    """Yield a list that gets, per committed transaction, the plan ids it deleted."""
    found: list[list[str]] = []
    if storage.dialect == "sqlite":
        statements: list[str] = []
        connection = storage.database.connection()
        connection.set_trace_callback(statements.append)
        try:
            yield found
        finally:
            connection.set_trace_callback(None)
        current: list[str] | None = None
        for statement in statements:
            if statement.startswith("BEGIN"):
                current = []
            elif statement == "COMMIT":
                assert current is not None
                if current:
                    found.append(current)
                current = None
            elif statement.startswith('DELETE FROM "dynflow_execution_plans"'):
                assert current is not None, "a plan row deleted outside a transaction"
                # (SQLite traces the statement again for each foreign key action it runs)
                found_ids = re.findall(r"'([^']+)'", statement)
                current.extend(plan for plan in found_ids if plan not in current)
        return
    storage.database.execute_sql(
        "CREATE TABLE deleted_plans (txid BIGINT, uuid TEXT, n SERIAL);"
        "CREATE FUNCTION note_deleted() RETURNS trigger AS $$ BEGIN "
        "INSERT INTO deleted_plans (txid, uuid) VALUES (txid_current(), OLD.uuid); "
        "RETURN OLD; END $$ LANGUAGE plpgsql;"
        "CREATE TRIGGER note_deleted AFTER DELETE ON dynflow_execution_plans "
        "FOR EACH ROW EXECUTE FUNCTION note_deleted();"
    )
    yield found
    cursor = storage.database.cursor()
    cursor.execute("SELECT txid, uuid FROM deleted_plans ORDER BY n")
    by_transaction: dict[int, list[str]] = {}
    for txid, plan_id in cursor.fetchall():
        by_transaction.setdefault(txid, []).append(plan_id)
    found.extend(by_transaction.values())


def test_batches_are_transactions_of_at_most_batch_size(storage: Storage) -> None:
    for n in range(10):
        storage.save_plan(stopped_plan(f"old{n}"))
    storage.save_plan(make_plan("paused"))
    batches: list[DeletedBatch] = []
    with deleted_per_transaction(storage) as transactions:
        deleted = storage.delete_plans_where(STOPPED, batch_size=3, progress=batches.append)
    assert deleted == 10
    assert all(len(plans) <= 3 for plans in transactions), transactions
    assert len(transactions) >= 4  # 10 plans, 3 at most each
    assert sorted(plan for plans in transactions for plan in plans) == sorted(
        f"old{n}" for n in range(10)
    )
    assert [batch.plans for batch in batches] == [len(plans) for plans in transactions]
    assert [batch.total for batch in batches][-1] == 10
    assert all(batch.seconds > 0 for batch in batches)
    assert ids(storage) == {"paused"}


def test_every_row_that_belongs_to_a_deleted_plan_is_gone(storage: Storage) -> None:
    for plan_id in ("gone", "kept", "after"):
        storage.save_plan(stopped_plan(plan_id, label=plan_id))
    now = datetime.now(UTC)
    for plan_id in ("gone", "kept"):
        storage.add_output_chunks([(plan_id, 1, {"line": plan_id}, "stdout", now)])
        storage.add_envelope(plan_id, 2, {"for": plan_id}, event_id=f"e-{plan_id}", chosen=True)
        storage.put_record("tests.Lock", f"lock-{plan_id}", b"{}", owner_id=plan_id)
        storage.put_record("tests.Recovery", plan_id, b"{}", owner_id="some-world")
    storage.add_delayed_plan("gone", start_at=None, start_before=None, frozen=False, args={"x": 1})
    # "after" was chained after "gone" (and has stopped: the chain no longer waits)
    storage.add_delayed_plan(
        "after", start_at=None, start_before=None, frozen=False, args={}, blocked_by=["gone"]
    )
    selection = PlanSelection(states=("stopped",), labels=("gone",))
    assert storage.count_deletable_plans(selection) == 1
    assert storage.delete_plans_where(selection) == 1
    assert ids(storage) == {"kept", "after"}
    for table in PLAN_TABLES:
        assert (
            count(storage, f"SELECT COUNT(*) FROM {table} WHERE execution_plan_uuid = ?", "gone")
            == 0
        )
    assert (
        count(storage, "SELECT COUNT(*) FROM dynflow_actions WHERE execution_plan_uuid = ?", "kept")
        == 3
    )
    assert storage.output_chunks("kept", 1) != []
    assert storage.envelopes("gone") == [] and len(storage.envelopes("kept")) == 1
    assert storage.chosen_event_ids("gone") == set()
    assert storage.chosen_event_ids("kept") == {(2, "e-kept")}
    assert (
        count(
            storage,
            "SELECT COUNT(*) FROM dynflow_coordinator_records WHERE owner_id = ? OR id = ?",
            "gone",
            "gone",
        )
        == 0
    )
    assert (
        count(
            storage,
            "SELECT COUNT(*) FROM dynflow_coordinator_records WHERE owner_id = ? OR id = ?",
            "kept",
            "kept",
        )
        == 3
    )
    assert count(storage, "SELECT COUNT(*) FROM dynflow_execution_plan_dependencies") == 0


def test_only_what_the_selection_names_is_deleted(storage: Storage) -> None:
    now = datetime.now(UTC)
    storage.save_plan(stopped_plan("old-a", label="a", ended_at=now - timedelta(hours=2)))
    storage.save_plan(stopped_plan("old-b", label="b", ended_at=now - timedelta(hours=2)))
    storage.save_plan(stopped_plan("new-a", label="a", ended_at=now))
    storage.save_plan(make_plan("paused-old", started_at=now - timedelta(hours=3), ended_at=None))
    storage.save_plan(make_plan("paused-new", started_at=now, ended_at=None))
    hour_ago = now - timedelta(hours=1)
    assert (
        storage.delete_plans_where(PlanSelection(("stopped",), labels=("a",), before=hour_ago)) == 1
    )
    assert ids(storage) == {"old-b", "new-a", "paused-old", "paused-new"}
    assert storage.delete_plans_where(PlanSelection(("stopped",), results=("success",))) == 0
    # paused plans age by when they started
    assert storage.delete_plans_where(PlanSelection(("paused",), before=hour_ago)) == 1
    assert ids(storage) == {"old-b", "new-a", "paused-new"}
    assert storage.delete_plans_where(PlanSelection(("stopped",), results=("error",))) == 2
    assert storage.delete_plans_where(PlanSelection((), results=("error",))) == 0
    assert ids(storage) == {"paused-new"}


@pytest.mark.parametrize("state", ["running", "planning", "pending"])
def test_plans_in_flight_are_never_selected(state: str) -> None:
    with pytest.raises(ValueError, match=f"state '{state}' are never deleted"):
        PlanSelection(states=("stopped", state))


def test_plans_that_a_plan_not_stopped_still_needs_are_kept(storage: Storage) -> None:
    storage.save_plan(make_plan("parent-running", state=PlanState.RUNNING, ended_at=None))
    storage.save_plan(stopped_plan("child-of-running", caller=("parent-running", 1)))
    storage.save_plan(stopped_plan("parent-of-paused"))
    storage.save_plan(make_plan("child-paused", caller=("parent-of-paused", 1), ended_at=None))
    storage.save_plan(stopped_plan("parent-done"))
    storage.save_plan(stopped_plan("child-done", caller=("parent-done", 1)))
    storage.save_plan(stopped_plan("blocker"))
    storage.save_plan(
        make_plan("chained", state=PlanState.SCHEDULED, started_at=None, ended_at=None)
    )
    storage.add_delayed_plan(
        "chained", start_at=None, start_before=None, frozen=False, args={}, blocked_by=["blocker"]
    )
    assert storage.count_deletable_plans(STOPPED) == 2
    assert storage.delete_plans_where(STOPPED) == 2
    assert ids(storage) == {
        "parent-running",
        "child-of-running",  # its caller counts its sub-plans' results
        "parent-of-paused",  # its sub-plan may still run and wake it
        "child-paused",
        "blocker",  # its result decides whether "chained" runs
        "chained",
    }
    with storage.transaction():
        storage.claim_plan("parent-running", ("running",), "stopped")
    assert storage.delete_plans_where(STOPPED) == 2  # the parent, then its child
    assert "child-of-running" not in ids(storage)


def test_a_plan_that_changes_after_it_was_chosen_is_kept(storage: Storage) -> None:
    for plan_id in ("p1", "p2", "p3"):
        storage.save_plan(make_plan(plan_id))  # paused
    paused = PlanSelection(states=("paused",))
    seen: list[list[str]] = []

    def resume_one(plans: list[ExecutionPlan]) -> None:
        seen.append(sorted(plan.id for plan in plans))
        if len(seen) == 1:  # between the choice and the delete, an executor claims p2
            assert storage.claim_plan("p2", ("paused",), "running")

    assert storage.delete_plans_where(paused, before_delete=resume_one) == 2
    assert seen == [["p1", "p2", "p3"]]
    assert ids(storage) == {"p2"}
    assert storage.load_plan("p2").state == PlanState.RUNNING


def test_stop_ends_the_deletion_between_batches(storage: Storage) -> None:
    for n in range(6):
        storage.save_plan(stopped_plan(f"p{n}"))
    batches: list[DeletedBatch] = []
    deleted = storage.delete_plans_where(
        STOPPED, batch_size=2, progress=batches.append, stop=lambda: len(batches) == 2
    )
    assert deleted == 4 and len(ids(storage)) == 2


def test_a_failing_callback_stops_before_its_batch_is_deleted(storage: Storage) -> None:
    for n in range(4):
        storage.save_plan(stopped_plan(f"p{n}"))
    calls = 0

    def fails_second(plans: list[ExecutionPlan]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.delete_plans_where(STOPPED, batch_size=2, before_delete=fails_second)
    assert len(ids(storage)) == 2


def test_two_deletions_at_once_delete_each_plan_once_and_leave_none(
    db_url: str, storage: Storage
) -> None:
    if storage.in_memory:
        pytest.skip("one in-memory database per storage")
    for n in range(40):
        storage.save_plan(stopped_plan(f"p{n:02d}"))
    results: list[int] = []
    errors: list[BaseException] = []

    def delete() -> None:
        with Storage(db_url) as other:
            try:
                results.append(other.delete_plans_where(STOPPED, batch_size=5))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=delete) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Each plan is deleted by one of them, and none is left behind (each skips the plans
    # the other took, and goes on while plans are left).
    assert errors == [] and sum(results) == 40, results
    assert ids(storage) == set()


def test_a_batch_another_deletion_took_is_skipped_and_the_rest_still_deleted(
    db_url: str, storage: Storage
) -> None:
    """The race of the test above, made certain: another deletion takes the batch this one
    chose before this one's transaction; this one skips it and deletes every plan left
    (it used to stop there, the plans it skipped being counted as if still stored)."""
    if storage.in_memory:
        pytest.skip("one in-memory database per storage")
    for n in range(42):  # not a multiple of the batch: the last batches are 5, then 2
        storage.save_plan(stopped_plan(f"p{n:02d}"))
    taken: list[str] = []

    def the_other_takes_it_first(plans: list[ExecutionPlan]) -> None:
        if not taken:
            taken.extend(plan.id for plan in plans)
            with Storage(db_url) as other:
                assert other.delete_plans(taken) == len(taken)

    deleted = storage.delete_plans_where(
        STOPPED, batch_size=5, before_delete=the_other_takes_it_first
    )
    assert len(taken) == 5
    assert deleted == 37 and ids(storage) == set()


def test_batch_size_must_be_a_positive_int(storage: Storage) -> None:
    for wrong in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            storage.delete_plans_where(STOPPED, batch_size=wrong)  # type: ignore[arg-type]


def test_batches_are_sized_for_the_target_time() -> None:
    assert next_batch_size(100, 0.01, 1000) == 200  # 5x under the 50 ms target: at most 2x
    assert next_batch_size(100, 0.04, 1000) == 125  # near it: in proportion
    assert next_batch_size(800, 0.01, 1000) == 1000  # never past the limit
    assert next_batch_size(1000, 0.2, 1000) == 250  # 4x too long: a quarter
    assert next_batch_size(3, 5.0, 1000) == 1  # at least one plan
    assert next_batch_size(10, 0.0, 1000) == 20  # a clock too coarse to tell
    assert FIRST_BATCH == 100


def test_the_blobs_of_a_corrupt_plan_do_not_stop_its_deletion(storage: Storage) -> None:
    storage.save_plan(stopped_plan("corrupt"))
    storage.database.execute_sql(
        "UPDATE dynflow_actions SET output = "
        + storage.database.param
        + " WHERE execution_plan_uuid = 'corrupt' AND id = 1",
        (b"\x80\x04not a codec frame",),
    )
    seen: list[ExecutionPlan] = []
    assert storage.delete_plans_where(STOPPED, before_delete=seen.extend) == 1
    assert len(seen) == 1 and not seen[0].valid
