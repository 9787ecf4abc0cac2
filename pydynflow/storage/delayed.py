"""Delayed plans and the plans they are chained after: ``dynflow_delayed_plans`` and
``dynflow_execution_plan_dependencies`` (a part of `Storage`).

A delayed plan's record holds when it may start and its arguments (JSON); it is deleted
once the plan is planned and stored (or stopped). A plan is claimed for planning by a
conditional update of its state (``scheduled`` -> ``planning``), so of two delayed
executors exactly one plans it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pydynflow.delayed import DelayedPlan
from pydynflow.storage.codec import decode_at, encode
from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.sql import IN_CHUNK, PLANS, StoreBase, wrap_errors

__all__ = ["DELAYED", "DEPENDENCIES", "Delayed", "DueDelayedPlan"]

DELAYED = "dynflow_delayed_plans"
DEPENDENCIES = "dynflow_execution_plan_dependencies"
_WAITING = ("scheduled", "planning")
"""The states of a plan whose delayed record is still needed (``planning``: being planned,
or left so by a delayed executor that died)."""


class DueDelayedPlan(NamedTuple):
    """A delayed plan ready to be planned (`Delayed.ready_delayed_plans`)."""

    plan_id: str
    state: str
    start_at: datetime | None
    start_before: datetime | None
    args: dict[str, Any]


class Delayed(StoreBase):
    """Delayed plans and their chains (a part of `Storage`)."""

    @wrap_errors("add_delayed_plan")
    def add_delayed_plan(
        self,
        plan_id: str,
        *,
        start_at: datetime | None,
        start_before: datetime | None,
        frozen: bool,
        args: dict[str, Any],
        blocked_by: Sequence[str] = (),
    ) -> None:
        """Store the delayed record of a stored plan and the plans it is chained after."""
        param, dt = self._db.param, self._dt
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                f'INSERT INTO "{DELAYED}" ("execution_plan_uuid", "start_at", "start_before", '
                f'"frozen", "serialized_args") VALUES ({param}, {param}, {param}, {param}, {param})',
                (plan_id, dt(start_at), dt(start_before), bool(frozen), encode(args)),
            )
            if blocked_by:
                self._executemany(
                    cursor,
                    f'INSERT INTO "{DEPENDENCIES}" ("execution_plan_uuid", "blocked_by_uuid") '
                    f"VALUES ({param}, {param})",
                    [(plan_id, blocker) for blocker in dict.fromkeys(blocked_by)],
                )

    @wrap_errors("delayed_plan")
    def delayed_plan(self, plan_id: str) -> DelayedPlan | None:
        """Return the delayed record of a plan with the plans it waits for, or None."""
        param = self._db.param
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                'SELECT "start_at", "start_before", "frozen", "serialized_args" '
                f'FROM "{DELAYED}" WHERE "execution_plan_uuid" = {param}',
                (plan_id,),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(
                f'SELECT "blocked_by_uuid" FROM "{DEPENDENCIES}" '
                f'WHERE "execution_plan_uuid" = {param} ORDER BY "blocked_by_uuid"',
                (plan_id,),
            )
            blocked_by = tuple(str(found[0]) for found in cursor.fetchall())
        start_at, start_before, frozen, blob = row
        return DelayedPlan(
            plan_id,
            from_db_datetime(start_at),
            from_db_datetime(start_before),
            bool(frozen),
            blocked_by,
            self._args(plan_id, blob),
        )

    @wrap_errors("ready_delayed_plans")
    def ready_delayed_plans(self, now: datetime, *, limit: int = 100) -> list[DueDelayedPlan]:
        """Return the delayed plans ready at ``now``, oldest ``start_at`` first (None first).

        Ready: not frozen; due (no ``start_at``, or one at or before ``now``) or past its
        ``start_before`` (to be failed); every plan it is chained after stopped; itself
        ``scheduled``, or ``planning`` (left so by a delayed executor that died).
        """
        param = self._db.param
        marks = ", ".join([param] * len(_WAITING))
        cursor = self._db.cursor()
        cursor.execute(
            'SELECT d."execution_plan_uuid", p."state", d."start_at", d."start_before", '
            f'd."serialized_args" FROM "{DELAYED}" d '
            f'JOIN "{PLANS}" p ON p."uuid" = d."execution_plan_uuid" '
            f'WHERE d."frozen" = {param} AND p."state" IN ({marks}) '
            f'AND (d."start_at" IS NULL OR d."start_at" <= {param} '
            f'OR d."start_before" <= {param}) '
            f'AND NOT EXISTS (SELECT 1 FROM "{DEPENDENCIES}" dep '
            f'JOIN "{PLANS}" b ON b."uuid" = dep."blocked_by_uuid" '
            'WHERE dep."execution_plan_uuid" = d."execution_plan_uuid" AND b."state" <> \'stopped\') '
            'ORDER BY (d."start_at" IS NOT NULL), d."start_at", d."execution_plan_uuid" '
            f"LIMIT {param}",
            (False, *_WAITING, self._dt(now), self._dt(now), int(limit)),
        )
        return [
            DueDelayedPlan(
                str(plan_id),
                str(state),
                from_db_datetime(start_at),
                from_db_datetime(start_before),
                self._args(plan_id, blob),
            )
            for plan_id, state, start_at, start_before, blob in cursor.fetchall()
        ]

    @wrap_errors("next_delayed_start")
    def next_delayed_start(self, after: datetime) -> datetime | None:
        """Return the earliest ``start_at`` or ``start_before`` later than ``after`` of a
        delayed plan not frozen, or None."""
        param = self._db.param
        cursor = self._db.cursor()
        found: list[datetime] = []
        for column in ("start_at", "start_before"):
            cursor.execute(
                f'SELECT MIN(d."{column}") FROM "{DELAYED}" d '
                f'JOIN "{PLANS}" p ON p."uuid" = d."execution_plan_uuid" '
                f'WHERE d."frozen" = {param} AND p."state" = {param} AND d."{column}" > {param}',
                (False, "scheduled", self._dt(after)),
            )
            row = cursor.fetchone()
            value = from_db_datetime(row[0]) if row else None
            if value is not None:
                found.append(value)
        return min(found) if found else None

    @wrap_errors("delayed_plans_waiting")
    def delayed_plans_waiting(self) -> bool:
        """Return whether a delayed plan not frozen waits (``scheduled`` or ``planning``,
        chained ones too): the delayed executor keeps polling while one does. (Thawing a
        frozen plan asks for a poll.)"""
        param = self._db.param
        marks = ", ".join([param] * len(_WAITING))
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT 1 FROM "{DELAYED}" d JOIN "{PLANS}" p ON p."uuid" = d."execution_plan_uuid" '
            f'WHERE d."frozen" = {param} AND p."state" IN ({marks}) LIMIT 1',
            (False, *_WAITING),
        )
        return cursor.fetchone() is not None

    @wrap_errors("delayed_poll_due_before")
    def delayed_poll_due_before(self, plan_id: str, moment: datetime) -> bool:
        """Return whether the delayed executor polls at ``moment`` or before anyway: another
        waiting plan, not frozen, falls due by then (its poll also looks at ``plan_id``)."""
        param = self._db.param
        marks = ", ".join([param] * len(_WAITING))
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT 1 FROM "{DELAYED}" d JOIN "{PLANS}" p ON p."uuid" = d."execution_plan_uuid" '
            f'WHERE d."execution_plan_uuid" <> {param} AND d."frozen" = {param} '
            f'AND p."state" IN ({marks}) AND d."start_at" IS NOT NULL AND d."start_at" <= {param} '
            "LIMIT 1",
            (plan_id, False, *_WAITING, self._dt(moment)),
        )
        return cursor.fetchone() is not None

    @wrap_errors("claim_delayed_plans")
    def claim_delayed_plans(self, plan_ids: Iterable[str]) -> list[str]:
        """Move each plan ``scheduled`` -> ``planning`` (one transaction); return those this
        call moved: a plan another executor claimed, or someone stopped, is left out."""
        param = self._db.param
        sql = f'UPDATE "{PLANS}" SET "state" = {param} WHERE "uuid" = {param} AND "state" = {param}'
        claimed = []
        with self._write_atomic():
            cursor = self._db.cursor()
            for plan_id in plan_ids:
                cursor.execute(sql, ("planning", plan_id, "scheduled"))
                if cursor.rowcount == 1:
                    claimed.append(plan_id)
        return claimed

    @wrap_errors("unclaim_delayed_plans")
    def unclaim_delayed_plans(self, plan_ids: Iterable[str]) -> int:
        """Move delayed plans left ``planning`` back to ``scheduled``; return how many."""
        param = self._db.param
        sql = (
            f'UPDATE "{PLANS}" SET "state" = {param} '
            f'WHERE "uuid" = {param} AND "state" = {param} '
            f'AND "uuid" IN (SELECT "execution_plan_uuid" FROM "{DELAYED}")'
        )
        moved = 0
        with self._write_atomic():
            cursor = self._db.cursor()
            for plan_id in plan_ids:
                cursor.execute(sql, ("scheduled", plan_id, "planning"))
                moved += max(cursor.rowcount, 0)
        return moved

    @wrap_errors("delete_delayed_plans")
    def delete_delayed_plans(self, plan_ids: Iterable[str]) -> int:
        """Delete the delayed records of these plans (their dependencies stay, for readers);
        return how many."""
        ids = list(dict.fromkeys(plan_ids))
        deleted = 0
        with self._write_atomic():
            cursor = self._db.cursor()
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                marks = ", ".join([self._db.param] * len(chunk))
                cursor.execute(
                    f'DELETE FROM "{DELAYED}" WHERE "execution_plan_uuid" IN ({marks})', chunk
                )
                deleted += max(cursor.rowcount, 0)
        return deleted

    @wrap_errors("drop_stale_delayed_plans")
    def drop_stale_delayed_plans(self) -> list[str]:
        """Delete the delayed records of plans no longer waiting (planned, running or
        stopped: a process stopped between storing the plan and deleting its record);
        return their plan ids."""
        param = self._db.param
        marks = ", ".join([param] * len(_WAITING))
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT d."execution_plan_uuid" FROM "{DELAYED}" d '
            f'JOIN "{PLANS}" p ON p."uuid" = d."execution_plan_uuid" '
            f'WHERE p."state" NOT IN ({marks})',
            _WAITING,
        )
        stale = [str(row[0]) for row in cursor.fetchall()]
        if stale:
            self.delete_delayed_plans(stale)
        return stale

    @wrap_errors("set_delayed_frozen")
    def set_delayed_frozen(
        self, plan_id: str, frozen: bool, *, start_at: datetime | None = None
    ) -> bool:
        """Freeze or thaw a delayed plan, and with ``start_at`` move its start; return
        whether it has a delayed record."""
        param = self._db.param
        sets, values = f'"frozen" = {param}', [bool(frozen)]
        if start_at is not None:
            sets += f', "start_at" = {param}'
            values.append(self._dt(start_at))
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                f'UPDATE "{DELAYED}" SET {sets} WHERE "execution_plan_uuid" = {param}',
                (*values, plan_id),
            )
            return bool(cursor.rowcount == 1)

    @wrap_errors("failed_prerequisites")
    def failed_prerequisites(self, plan_id: str) -> list[str]:
        """Return the plans ``plan_id`` is chained after that stopped with result ``error``
        (a halted or warning prerequisite does not count, as in Dynflow)."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT b."uuid" FROM "{DEPENDENCIES}" dep '
            f'JOIN "{PLANS}" b ON b."uuid" = dep."blocked_by_uuid" '
            f'WHERE dep."execution_plan_uuid" = {param} AND b."state" = {param} '
            f'AND b."result" = {param} ORDER BY b."uuid"',
            (plan_id, "stopped", "error"),
        )
        return [str(row[0]) for row in cursor.fetchall()]

    @wrap_errors("blocked_plans")
    def blocked_plans(self, plan_id: str) -> list[str]:
        """Return the plans chained after ``plan_id`` (Dynflow's console: "Blocks")."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "execution_plan_uuid" FROM "{DEPENDENCIES}" '
            f'WHERE "blocked_by_uuid" = {param} ORDER BY "execution_plan_uuid"',
            (plan_id,),
        )
        return [str(row[0]) for row in cursor.fetchall()]

    @staticmethod
    def _args(plan_id: Any, blob: Any) -> dict[str, Any]:
        if blob is None:
            return {}
        data = decode_at(blob, f"delayed plan {plan_id}: serialized_args")
        return data if isinstance(data, dict) else {}
