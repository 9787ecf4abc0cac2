"""Execution plans: save, claim, load, find, count and delete them with their steps and actions.

Each public write is atomic on its own, and nests as a savepoint inside
`pydynflow.storage.Storage.transaction`. A plan is read in one read transaction, from one
snapshot of the database, and rebuilt by `pydynflow.storage.assembly.assemble_plan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from pydynflow.errors import UnknownPlan
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.storage.assembly import assemble_plan
from pydynflow.storage.batch import Upsert
from pydynflow.storage.codec import decode_at
from pydynflow.storage.retention import delete_plan_rows
from pydynflow.storage.rows import (
    ACTION_COLUMNS,
    PLAN_COLUMNS,
    PLAN_META_COLUMNS,
    RECORD_STATE,
    RECORD_STEP_ID,
    STEP_COLUMNS,
    Rows,
    row_steps,
)
from pydynflow.storage.sql import (
    ACTIONS,
    PLANS,
    STEPS,
    select_sql,
    upsert_sql,
    wrap_errors,
)

__all__ = ["ORDERABLE_COLUMNS", "Plans"]

ORDERABLE_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "state": "state",
    "result": "result",
    "label": "label",
    "started_at": "started_at",
    "ended_at": "ended_at",
    "real_time": "real_time",
    "execution_time": "execution_time",
}
"""``find_plans(order_by=...)`` names and the columns they sort on."""


class Plans(Rows):
    """Execution plans with their actions and steps (a part of `Storage`)."""

    def __init__(self, database: peewee.Database, *, url: str | None, owned: bool) -> None:
        """Use ``database`` (see `StoreBase`); prepare the upserts of plans, actions, steps."""
        super().__init__(database, url=url, owned=owned)
        param = database.param
        self._sql_plan_upsert = upsert_sql(PLANS, PLAN_COLUMNS, ("uuid",), param)
        self._sql_plan_meta_upsert = upsert_sql(PLANS, PLAN_META_COLUMNS, ("uuid",), param)
        self._sql_action_upsert = upsert_sql(
            ACTIONS, ACTION_COLUMNS, ("execution_plan_uuid", "id"), param
        )
        self._sql_step_upsert = upsert_sql(
            STEPS, STEP_COLUMNS, ("execution_plan_uuid", "id"), param
        )
        self._plan_upsert = Upsert(PLANS, PLAN_COLUMNS, ("uuid",), param)
        self._plan_meta_upsert = Upsert(PLANS, PLAN_META_COLUMNS, ("uuid",), param)
        self._action_upsert = Upsert(ACTIONS, ACTION_COLUMNS, ("execution_plan_uuid", "id"), param)
        self._step_upsert = Upsert(STEPS, STEP_COLUMNS, ("execution_plan_uuid", "id"), param)

    @wrap_errors("save_plan")
    def save_plan(self, plan: ExecutionPlan) -> None:
        """Upsert the plan row, all its actions and all its steps in one transaction.

        The ``result`` column gets ``plan.result``. Rows of actions or steps that are no longer
        in ``plan`` are left alone (plans only grow). For an invalid plan (``valid=False``, as
        loaded from rows that did not fit together) only the metadata columns and the history
        are written, never its (unreadable, hence empty) flows, actions or steps.

        Raises:
            SerializationError: if an input, output or error cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        plan_sql, plan_row = self._plan_statement(plan)
        if plan.valid:
            action_rows = [self._action_row(action) for action in plan.actions.values()]
            step_rows = [self._step_row(step) for step in row_steps(plan.steps.values())]
        else:
            action_rows = step_rows = []
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(plan_sql, plan_row)
            if action_rows:
                self._executemany(cursor, self._sql_action_upsert, action_rows)
            if step_rows:
                self._executemany(cursor, self._sql_step_upsert, step_rows)

    @wrap_errors("save_plan_row")
    def save_plan_row(self, plan: ExecutionPlan) -> None:
        """Update the plan row's metadata: state, result, label, times and history.

        Never its flows nor the steps its row carries, which planning wrote once (see
        `plan_snapshot`): rewriting them from a loaded plan would drop the pending steps a
        new plan keeps there. The plan must have been saved whole (`save_plan`) before.
        """
        _, plan_row = self.plan_row_of(self.plan_snapshot(plan))
        with self._write_atomic():
            self._db.cursor().execute(self._sql_plan_meta_upsert, plan_row)

    @wrap_errors("save_steps")
    def save_steps(self, steps: Iterable[Step]) -> None:
        """Upsert ``steps`` (of any plans, whose rows must exist) in one transaction.

        A step listed twice is written twice, the last one wins.
        """
        rows = [self._step_row(step) for step in steps]
        if not rows:
            return
        with self._write_atomic():
            self._executemany(self._db.cursor(), self._sql_step_upsert, rows)

    @wrap_errors("save_actions")
    def save_actions(self, actions: Iterable[ActionRecord]) -> None:
        """Upsert ``actions`` (of any plans, whose rows must exist) in one transaction."""
        rows = [self._action_row(action) for action in actions]
        if not rows:
            return
        with self._write_atomic():
            self._executemany(self._db.cursor(), self._sql_action_upsert, rows)

    @wrap_errors("write_rows")
    def write_rows(
        self,
        *,
        full_plans: Sequence[tuple[Any, ...]] = (),
        plans: Sequence[tuple[Any, ...]] = (),
        steps: Sequence[tuple[Any, ...]] = (),
        actions: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Upsert encoded rows in one transaction: full plan rows first, then the rest.

        A row given twice (by its key) is written once, with its last values. Inside a
        `batched_transaction` the statements are held back (one multi-row statement a table
        on PostgreSQL).
        """
        with self._statements() as out:
            out.upsert(self._plan_upsert, full_plans)
            out.upsert(self._plan_meta_upsert, plans)
            out.upsert(self._action_upsert, actions)
            out.upsert(self._step_upsert, steps)

    @wrap_errors("claim_plan")
    def claim_plan(
        self, plan_id: str, from_states: tuple[str, ...], to_state: str = "running"
    ) -> bool:
        """Move a plan to ``to_state`` only if it is in one of ``from_states``.

        A conditional update: of two executors claiming one plan, exactly one wins.

        Returns:
            whether this call moved the plan.
        """
        param = self._db.param
        marks = ", ".join([param] * len(from_states))
        sql = (
            f'UPDATE "{PLANS}" SET "state" = {param} '
            f'WHERE "uuid" = {param} AND "state" IN ({marks})'
        )
        with self._statements() as out:  # in a batched transaction: one round trip
            return bool(out.ask(sql, (to_state, plan_id, *from_states)).rowcount == 1)

    @wrap_errors("plan_exists")
    def plan_exists(self, plan_id: str) -> bool:
        """Return whether a plan row with this id is stored."""
        cursor = self._db.cursor()
        cursor.execute(f'SELECT 1 FROM "{PLANS}" WHERE "uuid" = {self._db.param}', (plan_id,))
        return cursor.fetchone() is not None

    @wrap_errors("delete_plans")
    def delete_plans(self, plan_ids: Iterable[str] | str) -> int:
        """Delete plans by id, in one transaction, with every row that belongs to them
        (`pydynflow.storage.retention.delete_plan_rows`), whatever their state.

        Returns:
            how many plans were deleted (unknown ids are ignored).
        """
        ids = [plan_ids] if isinstance(plan_ids, str) else list(dict.fromkeys(map(str, plan_ids)))
        with self._write_atomic():
            return delete_plan_rows(self._db.cursor(), self._db.param, self._sqlite, ids)

    # -- reads ----------------------------------------------------------------------------

    @wrap_errors("load_plan")
    def load_plan(self, plan_id: str) -> ExecutionPlan:
        """Return the plan with every field rebuilt from its rows.

        Rows that do not fit together (missing steps or actions, a step of an unknown
        action...) or that fail to decode give a plan with ``valid=False`` and ``exception``
        set to a `StepError` of `DataConsistencyError` or `CorruptData`; its row fields (id,
        label, state, times, history, stored result) are kept, its steps, actions and flows
        are empty (Dynflow's InvalidPlan).

        Raises:
            UnknownPlan: if no plan has this id.
        """
        param = self._db.param
        plan_id = str(plan_id)
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(select_sql(PLANS, PLAN_COLUMNS) + f" WHERE uuid = {param}", (plan_id,))
            row = cursor.fetchone()
            if row is None:
                raise UnknownPlan(f"no execution plan with id {plan_id!r}")
            cursor.execute(
                select_sql(ACTIONS, ACTION_COLUMNS)
                + f" WHERE execution_plan_uuid = {param} ORDER BY id",
                (plan_id,),
            )
            action_rows = cursor.fetchall()
            cursor.execute(
                select_sql(STEPS, STEP_COLUMNS)
                + f" WHERE execution_plan_uuid = {param} ORDER BY id",
                (plan_id,),
            )
            step_rows = cursor.fetchall()
        return assemble_plan(row, action_rows, step_rows)

    @wrap_errors("find_plans")
    def find_plans(
        self,
        *,
        state: Any = None,
        result: Any = None,
        label: Any = None,
        caller_execution_plan_id: str | None = None,
        caller_action_id: int | None = None,
        limit: int | None = 100,
        offset: int = 0,
        order_by: str = "started_at",
        desc: bool = True,
    ) -> list[ExecutionPlan]:
        """Return a page of plans, fully loaded, in three queries whatever the page size.

        Args:
            state: a state or a list of states (a list means any of them, an empty list
                matches nothing).
            result: a result or a list of results, likewise.
            label: a label or a list of labels, likewise.
            caller_execution_plan_id: only plans with an action called by this plan
                (sub-plans); ``caller_action_id`` narrows it to one calling action.
            limit: page size; ``None`` for all.
            offset: how many matching plans to skip.
            order_by: one of `ORDERABLE_COLUMNS`; NULLs sort last in both directions and ties
                are broken by id, ascending.
            desc: descending order.

        Raises:
            ValueError: for an ``order_by`` that is not allowed, ``caller_action_id`` without
                ``caller_execution_plan_id``, or a negative ``limit`` / ``offset``.
        """
        where, params = self._where(
            state, result, label, caller_execution_plan_id, caller_action_id
        )
        order = self._order(order_by, desc)
        page, page_params = self._page(limit, offset)
        page_sql = f'SELECT uuid FROM "{PLANS}"{where}{order}{page}'
        all_params = params + page_params
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(select_sql(PLANS, PLAN_COLUMNS) + where + order + page, all_params)
            plan_rows = cursor.fetchall()
            if not plan_rows:
                return []
            children: list[dict[str, list[tuple[Any, ...]]]] = []
            for table, columns in ((ACTIONS, ACTION_COLUMNS), (STEPS, STEP_COLUMNS)):
                cursor.execute(
                    select_sql(table, columns)
                    + f" WHERE execution_plan_uuid IN ({page_sql}) ORDER BY execution_plan_uuid, id",
                    all_params,
                )
                grouped: dict[str, list[tuple[Any, ...]]] = {}
                for child in cursor.fetchall():
                    grouped.setdefault(child[0], []).append(child)
                children.append(grouped)
        actions_by_plan, steps_by_plan = children
        return [
            assemble_plan(row, actions_by_plan.get(row[0], []), steps_by_plan.get(row[0], []))
            for row in plan_rows
        ]

    @wrap_errors("count_plans")
    def count_plans(
        self,
        *,
        state: Any = None,
        result: Any = None,
        label: Any = None,
        caller_execution_plan_id: str | None = None,
        caller_action_id: int | None = None,
    ) -> int:
        """Return how many plans match the filters of `find_plans`."""
        where, params = self._where(
            state, result, label, caller_execution_plan_id, caller_action_id
        )
        cursor = self._db.cursor()
        cursor.execute(f'SELECT COUNT(*) FROM "{PLANS}"{where}', params)
        return int(cursor.fetchone()[0])

    @wrap_errors("step_state")
    def step_state(self, plan_id: str, step_id: int | None = None) -> str | None:
        """Return a step's stored state (the plan's with no ``step_id``), or None if absent."""
        param = self._db.param
        cursor = self._db.cursor()
        if step_id is None:
            cursor.execute(f'SELECT "state" FROM "{PLANS}" WHERE "uuid" = {param}', (plan_id,))
        else:
            cursor.execute(
                f'SELECT "state" FROM "{STEPS}" '
                f'WHERE "execution_plan_uuid" = {param} AND "id" = {param}',
                (plan_id, int(step_id)),
            )
        row = cursor.fetchone()
        if row is None and step_id is not None:  # a plan-phase step: in its plan's row
            cursor.execute(f'SELECT "plan_steps" FROM "{PLANS}" WHERE "uuid" = {param}', (plan_id,))
            found = cursor.fetchone()
            if found is not None and found[0] is not None:
                for record in decode_at(found[0], f"execution plan {plan_id}: plan_steps"):
                    if record[RECORD_STEP_ID] == int(step_id):
                        return str(record[RECORD_STATE])
        return None if row is None else str(row[0])

    # -- internals ----------------------------------------------------------------------

    def _plan_statement(self, plan: ExecutionPlan) -> tuple[str, tuple[Any, ...]]:
        has_flows, values = self.plan_row_of(self.plan_snapshot(plan, full=True))
        return (self._sql_plan_upsert if has_flows else self._sql_plan_meta_upsert), values

    def _action_row(self, action: ActionRecord) -> tuple[Any, ...]:
        return self.action_row_of(self.action_snapshot(action))

    def _step_row(self, step: Step) -> tuple[Any, ...]:
        return self.step_row_of(self.step_snapshot(step))

    def _where(
        self,
        state: Any,
        result: Any,
        label: Any,
        caller_execution_plan_id: str | None,
        caller_action_id: int | None,
    ) -> tuple[str, list[Any]]:
        param = self._db.param
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("state", state), ("result", result), ("label", label)):
            values = _as_values(value)
            if values is None:
                continue
            if not values:
                clauses.append("1 = 0")
            elif len(values) == 1:
                clauses.append(f'"{column}" = {param}')
            else:
                clauses.append(f'"{column}" IN ({", ".join([param] * len(values))})')
            params.extend(values)
        if caller_action_id is not None and caller_execution_plan_id is None:
            raise ValueError("caller_action_id needs caller_execution_plan_id")
        if caller_execution_plan_id is not None:
            sub = f'SELECT execution_plan_uuid FROM "{ACTIONS}" WHERE caller_execution_plan_id = {param}'
            params.append(str(caller_execution_plan_id))
            if caller_action_id is not None:
                sub += f" AND caller_action_id = {param}"
                params.append(int(caller_action_id))
            clauses.append(f"uuid IN ({sub})")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    @staticmethod
    def _order(order_by: str, desc: bool) -> str:
        column = ORDERABLE_COLUMNS.get(order_by) if isinstance(order_by, str) else None
        if column is None:
            raise ValueError(
                f"cannot order execution plans by {order_by!r}; "
                f"allowed: {', '.join(ORDERABLE_COLUMNS)}"
            )
        direction = "DESC" if desc else "ASC"
        if column == "uuid":
            return f' ORDER BY "uuid" {direction}'
        # "(x IS NULL)" first puts NULLs last in both directions, on SQLite and PostgreSQL.
        return f' ORDER BY ("{column}" IS NULL), "{column}" {direction}, "uuid" ASC'

    def _page(self, limit: int | None, offset: int) -> tuple[str, list[Any]]:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, not {offset!r}")
        param = self._db.param
        if limit is None:
            if not offset:
                return "", []
            if self._sqlite:
                return f" LIMIT -1 OFFSET {param}", [offset]
            return f" OFFSET {param}", [offset]
        return f" LIMIT {param} OFFSET {param}", [limit, offset]


def _as_values(value: Any) -> list[str] | None:
    """Return a filter value as a list of strings (``None``: no filter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [str(value)]
    return [str(item) for item in value]
