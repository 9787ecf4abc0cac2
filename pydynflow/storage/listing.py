"""What a plan list shows: pages of plan summaries, counts and fingerprints, in a few cheap
queries whatever the number of plans stored.

A summary is the plan row's metadata and its root action's class, never its blobs (flows,
history, step records) nor its steps: a page of 50 plans reads 50 rows. The queries lean on
the indexes of schema migration 6 (`pydynflow.storage.migrations`): ``(state, started_at,
uuid)``-style indexes that both filter and order, and the root actions' classes. Values are
always parameters; column names only ever come from `LIST_ORDERS`.

Plans without a value in the ordering column (a plan not started has no ``started_at``) come
last in both directions. A page is read from the plans with a value, then, once those run
out, from the plans without one (each part walks an index in order; PostgreSQL and SQLite
place NULLs at opposite ends of an index, so one ``ORDER BY`` could not use it on both).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.sql import ACTIONS, CHUNKS, PLANS, STEPS, StoreBase, wrap_errors

__all__ = [
    "LIST_ORDERS",
    "Listing",
    "PlanPage",
    "PlanQuery",
    "PlanSummary",
    "ROOT_ACTION_ID",
]

ROOT_ACTION_ID = 1
"""The id of a plan's root action: planning numbers actions from it (`pydynflow.planning`)."""

LIST_ORDERS: dict[str, str] = {
    "started_at": "started_at",
    "ended_at": "ended_at",
    "state": "state",
    "result": "result",
    "label": "label",
    "id": "uuid",
}
"""What a plan list may be ordered by, and the column each name sorts on."""

_SUMMARY_COLUMNS = (
    'p."uuid", p."state", p."result", p."label", p."started_at", p."ended_at", '
    'p."real_time", p."execution_time", a."class"'
)


@dataclasses.dataclass(frozen=True, slots=True)
class PlanQuery:
    """Which plans a list shows, in what order, and which page of them.

    Attributes:
        states: only plans in one of these states (None: any state).
        results: only plans with one of these results (None: any).
        label: only plans with exactly this label.
        search: only plans whose label contains this text (case-insensitive for ASCII).
        action_class: only plans whose root action has this class (``module.QualName``).
        caller: only the sub-plans of this plan (``(plan id, None)``) or of one of its
            actions (``(plan id, action id)``).
        order_by: one of `LIST_ORDERS`.
        desc: descending order (ties: descending ids).
        limit: the page size.
        offset: how many matching plans come before the page.
    """

    states: tuple[str, ...] | None = None
    results: tuple[str, ...] | None = None
    label: str | None = None
    search: str | None = None
    action_class: str | None = None
    caller: tuple[str, int | None] | None = None
    order_by: str = "started_at"
    desc: bool = True
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.order_by not in LIST_ORDERS:
            raise ValueError(
                f"cannot order plans by {self.order_by!r}; allowed: {', '.join(LIST_ORDERS)}"
            )
        if self.limit < 0 or self.offset < 0:
            raise ValueError("limit and offset must be >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class PlanSummary:
    """One plan as a list shows it."""

    id: str
    label: str | None
    state: str
    result: str | None
    started_at: datetime | None
    ended_at: datetime | None
    real_time: float | None
    execution_time: float | None
    action_class: str | None
    """Its root action's class (None if that row is missing)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PlanPage:
    """A page of a plan list and how many plans match in all."""

    plans: list[PlanSummary]
    total: int


class Listing(StoreBase):
    """Plan lists, counts and change fingerprints for consoles (a part of `Storage`)."""

    @wrap_errors("list_plans")
    def list_plans(self, query: PlanQuery, *, count: bool = True) -> PlanPage:
        """Return a page of plan summaries matching ``query`` (``count``: and their total;
        without it ``total`` is -1)."""
        where, params = self._list_where(query)
        column = LIST_ORDERS[query.order_by]
        direction = "DESC" if query.desc else "ASC"
        with self._read_atomic():
            cursor = self._db.cursor()
            total = self._count(cursor, where, params) if count else -1
            if column == "uuid":
                ids = self._page_ids(
                    cursor, where, params, f'"uuid" {direction}', query.limit, query.offset
                )
            else:
                ids = self._ids_nulls_last(cursor, where, params, column, direction, query)
            plans = self._summaries(cursor, ids)
        return PlanPage(plans, total)

    @wrap_errors("count_plans_by")
    def count_plans_by(self, column: str) -> dict[str | None, int]:
        """Return how many plans are stored per ``state`` or per ``result`` (``column``);
        each count reads one index, not the plans."""
        if column not in ("state", "result"):
            raise ValueError(f"plans are counted by state or result, not {column!r}")
        cursor = self._db.cursor()
        cursor.execute(f'SELECT "{column}", COUNT(*) FROM "{PLANS}" GROUP BY 1')
        return {value: int(n) for value, n in cursor.fetchall()}

    @wrap_errors("count_active_steps")
    def count_active_steps(self) -> dict[str, int]:
        """Return how many steps of the plans not ``stopped`` are in each state (the steps
        of stopped plans no longer change; counting them would read every step row)."""
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT s."state", COUNT(*) FROM "{PLANS}" p '
            f'JOIN "{STEPS}" s ON s."execution_plan_uuid" = p."uuid" '
            f'WHERE p."state" <> {self._db.param} GROUP BY 1',
            ("stopped",),
        )
        return {state: int(n) for state, n in cursor.fetchall()}

    @wrap_errors("root_action_classes")
    def root_action_classes(self) -> list[str]:
        """Return the distinct classes of the plans' root actions, sorted.

        One index probe per class (a loose index scan), not a pass over every plan.
        """
        cursor = self._db.cursor()
        cursor.execute(
            "WITH RECURSIVE found(name) AS ("
            f'SELECT MIN("class") FROM "{ACTIONS}" WHERE "id" = {ROOT_ACTION_ID:d} '
            f'UNION ALL SELECT (SELECT MIN("class") FROM "{ACTIONS}" '
            f'WHERE "id" = {ROOT_ACTION_ID:d} AND "class" > found.name) FROM found '
            "WHERE found.name IS NOT NULL) "
            "SELECT name FROM found WHERE name IS NOT NULL"
        )
        return [str(row[0]) for row in cursor.fetchall()]

    @wrap_errors("plan_fingerprint")
    def plan_fingerprint(self, plan_id: str) -> tuple[Any, ...] | None:
        """Return a value that changes whenever what a plan page shows may have: the plan
        row's state, result and end, and per step state, the count, progress and last end
        time, and the output chunks' count. None if no such plan."""
        param = self._db.param
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                f'SELECT "state", "result", "ended_at", "execution_history" FROM "{PLANS}" '
                f'WHERE "uuid" = {param}',
                (plan_id,),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            history = row[3]
            cursor.execute(
                f'SELECT "state", COUNT(*), SUM("progress_done"), MAX("ended_at"), '
                f'SUM("attempts"), MAX("started_at") FROM "{STEPS}" '
                f'WHERE "execution_plan_uuid" = {param} GROUP BY 1 ORDER BY 1',
                (plan_id,),
            )
            steps = tuple(tuple(str(value) for value in step) for step in cursor.fetchall())
            cursor.execute(
                f'SELECT COUNT(*) FROM "{CHUNKS}" WHERE "execution_plan_uuid" = {param}',
                (plan_id,),
            )
            chunks = cursor.fetchone()[0]
        size = len(bytes(history)) if history is not None else 0
        return (row[0], row[1], str(row[2]), size, steps, chunks)

    # -- internals ------------------------------------------------------------------------

    def _list_where(self, query: PlanQuery) -> tuple[list[str], list[Any]]:
        param = self._db.param
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (("state", query.states), ("result", query.results)):
            if values is None:
                continue
            if not values:
                clauses.append("1 = 0")
            else:
                clauses.append(f'"{column}" IN ({", ".join([param] * len(values))})')
                params.extend(values)
        if query.label is not None:
            clauses.append(f'"label" = {param}')
            params.append(query.label)
        if query.search:
            like = "ILIKE" if self._postgres else "LIKE"
            clauses.append(f"\"label\" {like} {param} ESCAPE '\\'")
            escaped = query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        if query.action_class is not None:
            # On SQLite, "+uuid" keeps the planner from reading the plans by id: it walks the
            # ordering index and checks each plan against the class's (covering) index,
            # instead of sorting every plan of that class.
            uuid = '+"uuid"' if self._sqlite else '"uuid"'
            # "id" = 1 as a literal: only then does SQLite see that the partial index on
            # root actions covers the query (with a parameter it reads every action row).
            clauses.append(
                f'{uuid} IN (SELECT "execution_plan_uuid" FROM "{ACTIONS}" '
                f'WHERE "id" = {ROOT_ACTION_ID:d} AND "class" = {param})'
            )
            params.append(query.action_class)
        if query.caller is not None:
            plan_id, action_id = query.caller
            sub = (
                f'SELECT "execution_plan_uuid" FROM "{ACTIONS}" '
                f'WHERE "caller_execution_plan_id" = {param}'
            )
            params.append(plan_id)
            if action_id is not None:
                sub += f' AND "caller_action_id" = {param}'
                params.append(int(action_id))
            clauses.append(f'"uuid" IN ({sub})')
        return clauses, params

    def _count(self, cursor: Any, where: list[str], params: list[Any]) -> int:
        cursor.execute(f'SELECT COUNT(*) FROM "{PLANS}"{_where(where)}', params)
        return int(cursor.fetchone()[0])

    def _page_ids(
        self,
        cursor: Any,
        where: list[str],
        params: list[Any],
        order: str,
        limit: int,
        offset: int,
    ) -> list[str]:
        param = self._db.param
        cursor.execute(
            f'SELECT "uuid" FROM "{PLANS}"{_where(where)} ORDER BY {order} '
            f"LIMIT {param} OFFSET {param}",
            [*params, limit, offset],
        )
        return [row[0] for row in cursor.fetchall()]

    def _ids_nulls_last(
        self,
        cursor: Any,
        where: list[str],
        params: list[Any],
        column: str,
        direction: str,
        query: PlanQuery,
    ) -> list[str]:
        """Page through the plans with a value in ``column``, then those without one."""
        order = f'"{column}" {direction}, "uuid" {direction}'
        valued = [*where, f'"{column}" IS NOT NULL']
        ids = self._page_ids(cursor, valued, params, order, query.limit, query.offset)
        if len(ids) == query.limit:
            return ids
        # With some rows, every plan with a value is behind us; with none, count them.
        before = query.offset + len(ids) if ids else self._count(cursor, valued, params)
        offset = max(0, query.offset - before)
        unvalued = [*where, f'"{column}" IS NULL']
        return ids + self._page_ids(
            cursor, unvalued, params, f'"uuid" {direction}', query.limit - len(ids), offset
        )

    def _summaries(self, cursor: Any, ids: list[str]) -> list[PlanSummary]:
        if not ids:
            return []
        param = self._db.param
        cursor.execute(
            f'SELECT {_SUMMARY_COLUMNS} FROM "{PLANS}" p LEFT JOIN "{ACTIONS}" a '
            f'ON a."execution_plan_uuid" = p."uuid" AND a."id" = {param} '
            f'WHERE p."uuid" IN ({", ".join([param] * len(ids))})',
            [ROOT_ACTION_ID, *ids],
        )
        found = {row[0]: row for row in cursor.fetchall()}
        return [
            PlanSummary(
                id=row[0],
                state=row[1],
                result=row[2],
                label=row[3],
                started_at=from_db_datetime(row[4]),
                ended_at=from_db_datetime(row[5]),
                real_time=row[6],
                execution_time=row[7],
                action_class=row[8],
            )
            for row in (found.get(plan_id) for plan_id in ids)
            if row is not None
        ]


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""
