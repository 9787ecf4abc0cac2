"""Retention: delete finished plans in batches, each batch one short write transaction, with
every row that belongs to them; never a plan that runs (a part of `Storage`).

A batch is chosen by a read, then its write transaction takes the chosen plans again under
the write lock (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on PostgreSQL), so a plan that
started to run (or changed otherwise) meanwhile is kept. Each batch is sized from the last
one's time to take `TARGET_SECONDS` (from `FIRST_BATCH` plans up to the batch size asked
for), so that plans with many steps hold the lock no longer than small ones. On
SQLite a pause follows each batch: a writer waiting for the lock polls (its busy handler
sleeps up to 25 ms between tries in its first 100 ms), and would otherwise find the next
batch holding it every time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydynflow.plan import ExecutionPlan
from pydynflow.storage.assembly import assemble_plan
from pydynflow.storage.envelopes import delete_envelope_ids, envelope_rows
from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.rows import ACTION_COLUMNS, PLAN_COLUMNS, STEP_COLUMNS
from pydynflow.storage.sql import (
    ACTIONS,
    CHILD_TABLES,
    COORDINATOR,
    IN_CHUNK,
    PLANS,
    STEPS,
    StoreBase,
    select_sql,
    wrap_errors,
)

__all__ = [
    "BATCH_SIZE",
    "FIRST_BATCH",
    "NEVER_DELETED",
    "SQLITE_PAUSE",
    "TARGET_SECONDS",
    "DeletedBatch",
    "PlanSelection",
    "Retention",
    "delete_plan_rows",
    "next_batch_size",
]

BATCH_SIZE = 1000
"""Plans deleted in one transaction at most, by default (Dynflow's)."""
FIRST_BATCH = 100
"""Plans in the first transaction of a run (fewer if the batch size is smaller)."""
TARGET_SECONDS = 0.05
"""How long a batch's write transaction should take at most; batches are sized for it."""
SQLITE_PAUSE = (0.025, 0.1)
"""Bounds of the pause after a batch on SQLite (half the batch's transaction time)."""
NEVER_DELETED = ("pending", "planning", "running")
"""States of plans in flight on some world: their rows are never deleted."""
DEPENDENCIES = "dynflow_execution_plan_dependencies"
_WAITING = ("scheduled", "planning")  # a chained plan that has not started yet
_NEEDED = (
    # The plans that a plan that is not stopped still needs, as ``(id column, "FROM ...
    # WHERE <expression equal to the plan's id>")`` (literals only: the states are ours):
    # sub-plans of a caller that is not stopped,
    (
        'r."execution_plan_uuid"',
        f'FROM "{ACTIONS}" r JOIN "{PLANS}" c ON c."uuid" = r."caller_execution_plan_id" '
        'AND c."state" <> \'stopped\' WHERE r."id" = 1 AND r."execution_plan_uuid"',
    ),
    # callers of a sub-plan that is not stopped,
    (
        's."caller_execution_plan_id"',
        f'FROM "{ACTIONS}" s JOIN "{PLANS}" sub ON sub."uuid" = s."execution_plan_uuid" '
        'AND sub."state" <> \'stopped\' WHERE s."caller_execution_plan_id"',
    ),
    # and the plans a chained plan that has not started yet is chained after.
    (
        'd."blocked_by_uuid"',
        f'FROM "{DEPENDENCIES}" d JOIN "{PLANS}" w ON w."uuid" = d."execution_plan_uuid" '
        f'AND w."state" IN ({", ".join(repr(state) for state in _WAITING)}) '
        'WHERE d."blocked_by_uuid"',
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class PlanSelection:
    """Which plans to delete: those matching every field given.

    ``before``: stopped plans that ended before it, other plans that started before it (a
    plan that never started, such as a scheduled one, never matches).
    """

    states: tuple[str, ...]
    results: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    before: datetime | None = None

    def __post_init__(self) -> None:
        refused = sorted(set(self.states) & set(NEVER_DELETED))
        if refused:
            raise ValueError(
                f"plans in state {refused[0]!r} are never deleted: they may run on a world "
                "right now"
            )
        if self.before is not None and self.before.tzinfo is None:  # naive means UTC
            object.__setattr__(self, "before", self.before.replace(tzinfo=UTC))

    def matches(
        self,
        state: str,
        result: str | None,
        label: str | None,
        started_at: datetime | None,
        ended_at: datetime | None,
    ) -> bool:
        """Return whether a plan with these row values is selected (guards aside)."""
        if state not in self.states:
            return False
        if self.results is not None and result not in self.results:
            return False
        if self.labels is not None and label not in self.labels:
            return False
        if self.before is None:
            return True
        moment = ended_at if state == "stopped" else started_at
        return moment is not None and moment < self.before


@dataclasses.dataclass(frozen=True, slots=True)
class DeletedBatch:
    """One committed batch of a deletion, as its progress callback gets it."""

    plans: int
    """Plans deleted by this batch's transaction."""
    seconds: float
    """How long its write transaction took, from ``BEGIN`` to the end of ``COMMIT`` (on
    SQLite that may include a WAL checkpoint, run once the lock is let go)."""
    total: int
    """Plans deleted so far, this batch included."""


def next_batch_size(size: int, seconds: float, limit: int, target: float = TARGET_SECONDS) -> int:
    """Return the size of the next batch after one of ``size`` plans took ``seconds``: in
    proportion to how far it was from ``target`` (a commit's fixed cost makes that
    undershoot, never overshoot), at most twice as large, at least 1, at most ``limit``."""
    scaled = int(size * target / seconds) if seconds > 0 else 2 * size
    return max(1, min(limit, 2 * size, scaled))


def delete_plan_rows(cursor: Any, param: str, sqlite: bool, plan_ids: Sequence[str]) -> int:
    """Delete plans and every row that belongs to them, in the caller's transaction: their
    actions, steps, output chunks, delayed records, dependencies (both ways), envelopes
    (events kept for their steps) and coordinator records (owned by one of them, or named by
    its id); return how many plan rows were deleted."""
    deleted = 0
    for start in range(0, len(plan_ids), IN_CHUNK):
        chunk = list(plan_ids[start : start + IN_CHUNK])
        marks = ", ".join([param] * len(chunk))
        # The foreign keys cascade too; deleting explicitly also cleans a database whose
        # connection was opened without foreign_keys=ON.
        for table in CHILD_TABLES:
            cursor.execute(f'DELETE FROM "{table}" WHERE "execution_plan_uuid" IN ({marks})', chunk)
        cursor.execute(
            f'DELETE FROM "{DEPENDENCIES}" '
            f'WHERE "execution_plan_uuid" IN ({marks}) OR "blocked_by_uuid" IN ({marks})',
            chunk + chunk,
        )
        cursor.execute(
            f'DELETE FROM "{COORDINATOR}" WHERE "owner_id" IN ({marks}) OR "id" IN ({marks})',
            chunk + chunk,
        )
        found = envelope_rows(cursor, param, sqlite, chunk)
        delete_envelope_ids(cursor, param, [row[0] for row in found])
        cursor.execute(f'DELETE FROM "{PLANS}" WHERE "uuid" IN ({marks})', chunk)
        deleted += max(cursor.rowcount, 0)
    return deleted


class Retention(StoreBase):
    """Deleting plans by what they are, in batches (a part of `Storage`)."""

    @wrap_errors("count_deletable_plans")
    def count_deletable_plans(self, selection: PlanSelection) -> int:
        """Return how many plans `delete_plans_where` would delete now."""
        where, params = self._deletable_where(selection)
        cursor = self._db.cursor()
        cursor.execute(f'SELECT COUNT(*) FROM "{PLANS}" p WHERE {where}', params)
        return int(cursor.fetchone()[0])

    @wrap_errors("delete_plans_where")
    def delete_plans_where(
        self,
        selection: PlanSelection,
        *,
        batch_size: int = BATCH_SIZE,
        before_delete: Callable[[list[ExecutionPlan]], Any] | None = None,
        progress: Callable[[DeletedBatch], Any] | None = None,
        stop: Callable[[], bool] | None = None,
        target_seconds: float = TARGET_SECONDS,
    ) -> int:
        """Delete the plans ``selection`` matches, with every row that belongs to them, in
        batches of at most ``batch_size`` plans, each its own write transaction; return how
        many were deleted.

        Plans are kept, whatever the selection says, while they may still matter to a plan
        that is not stopped: a sub-plan whose caller is not stopped (its counts are read from
        its sub-plans), a plan with a sub-plan that is not stopped, and a plan that a waiting
        chained plan is chained after (its result decides whether that one runs).

        Args:
            selection: which plans.
            batch_size: plans per transaction at most.
            before_delete: called with each batch's plans (as `load_plan` reads them) before
                its transaction; a plan that changed meanwhile is then kept (the callback
                saw it anyway). An exception stops the deletion before that batch.
            progress: called after each batch's commit.
            stop: asked before each batch; True ends the deletion there.
            target_seconds: how long a transaction should take at most (see the module).

        Raises:
            ValueError: a ``batch_size`` that is not a positive int.
            PersistenceError: if the database fails (batches committed before stay deleted).
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        where, params = self._deletable_where(selection)
        total = 0
        size = min(batch_size, FIRST_BATCH)
        skipped: set[str] = set()  # chosen, then not taken by the write transaction
        while stop is None or not stop():
            limit = size + len(skipped)
            chosen = self._choose(where, params, limit)
            fresh = [plan_id for plan_id in chosen if plan_id not in skipped]
            ids = fresh[:size]
            if not ids:
                break
            if before_delete is not None:
                before_delete(self._plans_of(ids))
            with self._write_atomic():
                began = time.perf_counter()
                cursor = self._db.cursor()
                taken = self._take(cursor, selection, ids)
                deleted = delete_plan_rows(cursor, self._db.param, self._sqlite, taken)
            seconds = time.perf_counter() - began
            skipped.update(set(ids).difference(taken))
            total += deleted
            if progress is not None:
                progress(DeletedBatch(deleted, seconds, total))
            # The last of them: the query saw every plan left, and this batch took them
            # all. (A skipped plan another deletion took is no longer there to be counted:
            # fewer rows than the limit alone does not mean that nothing is left.)
            if len(chosen) < limit and len(fresh) <= size:
                break
            size = next_batch_size(size, seconds, batch_size, target_seconds)
            if self._sqlite:  # let the writers waiting for the lock in (see the module)
                time.sleep(min(max(seconds / 2, SQLITE_PAUSE[0]), SQLITE_PAUSE[1]))
        return total

    # -- internals ----------------------------------------------------------------------

    def _deletable_where(self, selection: PlanSelection) -> tuple[str, list[Any]]:
        """Return the condition (on plans aliased ``p``) of the plans to delete."""
        param = self._db.param
        clauses: list[str] = []
        params: list[Any] = []

        def one_of(column: str, values: Sequence[str]) -> None:
            if not values:
                clauses.append("1 = 0")
                return
            clauses.append(f'p."{column}" IN ({", ".join([param] * len(values))})')
            params.extend(values)

        one_of("state", selection.states)
        if selection.results is not None:
            one_of("result", selection.results)
        if selection.labels is not None:
            one_of("label", selection.labels)
        if selection.before is not None:
            before = self._dt(selection.before)
            stopped = "stopped" in selection.states
            others = [state for state in selection.states if state != "stopped"]
            times = []
            if stopped:
                times.append(f"""(p."state" = 'stopped' AND p."ended_at" < {param})""")
                params.append(before)
            if others:
                times.append(f"""(p."state" <> 'stopped' AND p."started_at" < {param})""")
                params.append(before)
            clauses.append("(" + " OR ".join(times or ["1 = 0"]) + ")")
        for _, needed in _NEEDED:
            clauses.append(f'NOT EXISTS (SELECT 1 {needed} = p."uuid")')
        return " AND ".join(clauses), params

    def _choose(self, where: str, params: list[Any], limit: int) -> list[str]:
        """Return the ids of up to ``limit`` plans to delete (read outside any transaction)."""
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT p."uuid" FROM "{PLANS}" p WHERE {where} LIMIT {self._db.param}',
            [*params, limit],
        )
        return [str(row[0]) for row in cursor.fetchall()]

    def _take(self, cursor: Any, selection: PlanSelection, ids: list[str]) -> list[str]:
        """Return those of ``ids`` still to delete, locked until the transaction ends.

        Read by primary key (and the guards through the indexes on the ids they join), so
        the time this holds the write lock depends on the batch, not on the size of the
        tables or on the planner's statistics of them.
        """
        param = self._db.param
        lock = " FOR UPDATE" if self._postgres else ""
        taken: list[str] = []
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            marks = ", ".join([param] * len(chunk))
            # In id order: two deletions at once lock their plans in the same order.
            cursor.execute(
                'SELECT "uuid", "state", "result", "label", "started_at", "ended_at" '
                f'FROM "{PLANS}" WHERE "uuid" IN ({marks}) ORDER BY "uuid"{lock}',
                chunk,
            )
            matching = [
                str(plan_id)
                for plan_id, state, result, label, started_at, ended_at in cursor.fetchall()
                if selection.matches(
                    state, result, label, from_db_datetime(started_at), from_db_datetime(ended_at)
                )
            ]
            if not matching:
                continue
            marks = ", ".join([param] * len(matching))
            needed: set[str] = set()
            for column, query in _NEEDED:
                cursor.execute(f"SELECT {column} {query} IN ({marks})", matching)
                needed.update(str(row[0]) for row in cursor.fetchall())
            taken.extend(plan_id for plan_id in matching if plan_id not in needed)
        return taken

    def _plans_of(self, ids: list[str]) -> list[ExecutionPlan]:
        """Return the stored plans of ``ids`` (missing ones left out), as `load_plan` does."""
        param = self._db.param
        plans: list[ExecutionPlan] = []
        with self._read_atomic():
            cursor = self._db.cursor()
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                marks = ", ".join([param] * len(chunk))
                cursor.execute(
                    select_sql(PLANS, PLAN_COLUMNS) + f' WHERE "uuid" IN ({marks}) ORDER BY "uuid"',
                    chunk,
                )
                rows = cursor.fetchall()
                children: list[dict[str, list[tuple[Any, ...]]]] = []
                for table, columns in ((ACTIONS, ACTION_COLUMNS), (STEPS, STEP_COLUMNS)):
                    cursor.execute(
                        select_sql(table, columns) + f' WHERE "execution_plan_uuid" IN ({marks}) '
                        'ORDER BY "execution_plan_uuid", "id"',
                        chunk,
                    )
                    grouped: dict[str, list[tuple[Any, ...]]] = {}
                    for child in cursor.fetchall():
                        grouped.setdefault(child[0], []).append(child)
                    children.append(grouped)
                actions, steps = children
                plans.extend(
                    assemble_plan(row, actions.get(row[0], []), steps.get(row[0], []))
                    for row in rows
                )
        return plans
