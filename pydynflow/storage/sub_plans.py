"""What a parent plan asks about its sub-plans: how many there are in each state, counted
in the database (so that the counts survive restarts and see sub-plans that ran on other
executor processes), and which run step of the parent to wake."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from pydynflow.storage.sql import ACTIONS, PLANS, StoreBase, wrap_errors

__all__ = ["SubPlanCounts", "SubPlans"]


@dataclasses.dataclass(frozen=True, slots=True)
class SubPlanCounts:
    """The sub-plans of one calling action, counted by how they stand.

    ``failed`` counts those ``paused`` or ``stopped`` with result ``error`` or ``warning``
    (Dynflow's v2 rule), ``failed_after`` those of them that ended at or after the time
    asked for; ``success`` those ``stopped`` with result ``success``; ``cancelled`` those
    ``stopped`` with result ``cancelled``.
    """

    total: int = 0
    success: int = 0
    failed: int = 0
    failed_after: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        """Return how many no longer run: succeeded, failed or cancelled."""
        return self.success + self.failed + self.cancelled


class SubPlans(StoreBase):
    """Sub-plan queries (a part of `Storage`)."""

    @wrap_errors("sub_plan_counts")
    def sub_plan_counts(
        self, plan_id: str, action_id: int, *, ended_after: datetime | None = None
    ) -> SubPlanCounts:
        """Count the sub-plans whose root action's caller is ``(plan_id, action_id)``.

        One query over the caller index: every sub-plan is a stored plan from the moment
        `World.trigger` returned, so the total is also how many were created.
        """
        param = self._db.param
        params: tuple[object, ...] = (plan_id, int(action_id))
        ended = "0"
        if ended_after is not None:
            ended = f'SUM(CASE WHEN "ended_at" >= {param} THEN 1 ELSE 0 END)'
            params = (self._dt(ended_after), *params)
        sql = (
            f'SELECT "state", "result", {ended}, COUNT(*) FROM "{PLANS}" WHERE "uuid" IN ('
            f'SELECT "execution_plan_uuid" FROM "{ACTIONS}" '
            f'WHERE "caller_execution_plan_id" = {param} AND "caller_action_id" = {param}) '
            'GROUP BY "state", "result"'
        )
        total = success = failed = failed_after = cancelled = 0
        with self._read_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, params)
            for state, result, ended_after_count, count in cursor.fetchall():
                count, ended_after_count = int(count), int(ended_after_count or 0)
                total += count
                if state == "stopped" and result == "success":
                    success += count
                elif state in ("paused", "stopped") and result in ("error", "warning"):
                    failed += count
                    failed_after += ended_after_count
                elif state == "stopped" and result == "cancelled":
                    cancelled += count
        return SubPlanCounts(total, success, failed, failed_after, cancelled)

    @wrap_errors("run_step_of")
    def run_step_of(self, plan_id: str, action_id: int) -> int | None:
        """Return the run step id of action ``action_id`` of plan ``plan_id`` (None if it
        has none or does not exist)."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "run_step_id" FROM "{ACTIONS}" '
            f'WHERE "execution_plan_uuid" = {param} AND "id" = {param}',
            (plan_id, int(action_id)),
        )
        row = cursor.fetchone()
        return None if row is None or row[0] is None else int(row[0])
