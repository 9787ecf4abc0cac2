"""The application `bench_worker_kills.py` runs under ``pydynflow worker --app kill_app``.

`FiveSteps` plans five `Recorded` steps in sequence. Each step records its attempt in the
table ``effects`` of the same PostgreSQL schema (its own connection, committed at once):
a row when its code starts (plan, step, process id, start time), the end time when it ends.
So the run can check afterwards, from what the steps themselves wrote, that no step ran in
two processes at the same time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg2

from pydynflow import Action, Retry

_connection: Any = None


def _effects() -> Any:
    global _connection
    if _connection is None:
        _connection = psycopg2.connect(os.environ["KILL_APP_DB"])
        _connection.autocommit = True
    return _connection


class Recorded(Action):
    """A step that works ~20 ms between two records of itself; retried if its world dies."""

    rescue = Retry(10, backoff=0.05, max_backoff=1.0)

    def run(self) -> None:
        with _effects().cursor() as cursor:
            cursor.execute(
                "INSERT INTO effects (plan_id, step_id, pid, started) "
                "VALUES (%s, %s, %s, clock_timestamp()) RETURNING id",
                (self.execution_plan_id, self.run_step_id, os.getpid()),
            )
            row_id = cursor.fetchone()[0]
        time.sleep(0.02)  # the step's work, during which a kill may land (noqa: sleep-ok)
        with _effects().cursor() as cursor:
            cursor.execute("UPDATE effects SET ended = clock_timestamp() WHERE id = %s", (row_id,))
        self.output["pid"] = os.getpid()


class FiveSteps(Action):
    """Five recorded steps in sequence."""

    def plan(self) -> None:
        with self.sequence():
            for _ in range(5):
                self.plan_action(Recorded)
