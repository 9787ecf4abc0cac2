"""The worlds sharing a database: the ``dynflow_worlds`` rows and their heartbeats.

Times come from the database's clock (PostgreSQL's ``now()``; on SQLite, whose processes
share one host, that host's clock), so that a host whose clock is off does not make every
other world look dead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydynflow.errors import CorruptData
from pydynflow.storage.codec import decode_at
from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.sql import IN_CHUNK, PLANS, StoreBase, wrap_errors

__all__ = ["WORLDS", "Worlds"]

WORLDS = "dynflow_worlds"
_COLUMNS = (
    "id",
    "name",
    "executor",
    "queues",
    "pid",
    "hostname",
    "validity_timeout",
    "started_at",
    "last_seen",
)
_NAMES = ", ".join(f'"{column}"' for column in _COLUMNS)
_PG_NOW = "(now() AT TIME ZONE 'UTC')"


class Worlds(StoreBase):
    """The world registry (a part of `Storage`)."""

    @wrap_errors("database_now")
    def database_now(self) -> datetime:
        """Return the database's current time (aware UTC)."""
        if not self._postgres:
            return datetime.now(UTC)
        row = self._db.execute_sql(f"SELECT {_PG_NOW}").fetchone()
        return row[0].replace(tzinfo=UTC)

    def _now_sql(self) -> tuple[str, tuple[Any, ...]]:
        """Return SQL for "now" in a column, and its parameters."""
        if self._postgres:
            return _PG_NOW, ()
        return self._db.param, (self._dt(datetime.now(UTC)),)

    @wrap_errors("register_world")
    def register_world(
        self,
        world_id: str,
        *,
        name: str,
        executor: bool,
        queues: dict[str, int],
        pid: int,
        hostname: str,
        validity_timeout: float,
    ) -> None:
        """Record a world as started now and seen now (replacing a record of the same id).

        ``validity_timeout``: how long it may stay silent before others count it dead.
        """
        param = self._db.param
        now, now_args = self._now_sql()
        sql = (
            f'INSERT INTO "{WORLDS}" ({_NAMES}) '
            f"VALUES ({param}, {param}, {param}, {param}, {param}, {param}, {param}, {now}, {now}) "
            'ON CONFLICT ("id") DO UPDATE SET "last_seen" = excluded."last_seen"'
        )
        values = (world_id, name, executor, json.dumps(queues), pid, hostname, validity_timeout)
        with self._write_atomic():
            self._db.cursor().execute(sql, values + now_args + now_args)

    @wrap_errors("touch_world")
    def touch_world(self, world_id: str) -> bool:
        """Set a world's ``last_seen`` to now; return False if it has no record (any more)."""
        now, now_args = self._now_sql()
        sql = f'UPDATE "{WORLDS}" SET "last_seen" = {now} WHERE "id" = {self._db.param}'
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (*now_args, world_id))
            return bool(cursor.rowcount == 1)

    @wrap_errors("remove_world")
    def remove_world(self, world_id: str, *, seen_before: datetime | None = None) -> bool:
        """Delete a world's record; return whether this call deleted it.

        With ``seen_before``, only if the world was last seen before then: of two worlds
        that find it dead at once, one deletes it (and so invalidates it), the other sees
        False.
        """
        param = self._db.param
        sql = f'DELETE FROM "{WORLDS}" WHERE "id" = {param}'
        values: tuple[Any, ...] = (world_id,)
        if seen_before is not None:
            sql += f' AND "last_seen" < {param}'
            values += (self._dt(seen_before),)
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, values)
            return bool(cursor.rowcount == 1)

    @wrap_errors("world_records")
    def world_records(self) -> list[dict[str, Any]]:
        """Return every world's record, oldest first, as dicts of the table's columns
        (``queues`` decoded, times aware UTC)."""
        cursor = self._db.execute_sql(f'SELECT {_NAMES} FROM "{WORLDS}" ORDER BY "started_at"')
        records = []
        for row in cursor.fetchall():
            record = dict(zip(_COLUMNS, row, strict=True))
            record["executor"] = bool(record["executor"])
            record["queues"] = json.loads(record["queues"])
            record["started_at"] = from_db_datetime(record["started_at"])
            record["last_seen"] = from_db_datetime(record["last_seen"])
            records.append(record)
        return records

    @wrap_errors("running_plan_owners")
    def running_plan_owners(self) -> dict[str, str | None]:
        """Return the plans stored ``running`` and the world that runs each: the world of
        its last "start execution" history entry (None if it has none or it is unreadable).

        Only the history blobs are read: cheap enough for an invalidation, too dear for a
        heartbeat when many plans run.
        """
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "uuid", "execution_history" FROM "{PLANS}" WHERE "state" = {self._db.param}',
            ("running",),
        )
        owners: dict[str, str | None] = {}
        for plan_id, blob in cursor.fetchall():
            owners[plan_id] = _last_starter(plan_id, blob)
        return owners

    @wrap_errors("executing_world")
    def executing_world(self, plan_id: str) -> str | None:
        """Return the world running ``plan_id`` (None if it is not ``running``)."""
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "state", "execution_history" FROM "{PLANS}" WHERE "uuid" = {self._db.param}',
            (plan_id,),
        )
        row = cursor.fetchone()
        if row is None or row[0] != "running":
            return None
        return _last_starter(plan_id, row[1])

    @wrap_errors("plan_states")
    def plan_states(self, plan_ids: list[str]) -> dict[str, str]:
        """Return the state of each stored plan of ``plan_ids`` (missing ones left out)."""
        states: dict[str, str] = {}
        param = self._db.param
        cursor = self._db.cursor()
        for start in range(0, len(plan_ids), IN_CHUNK):
            chunk = plan_ids[start : start + IN_CHUNK]
            cursor.execute(
                f'SELECT "uuid", "state" FROM "{PLANS}" '
                f'WHERE "uuid" IN ({", ".join([param] * len(chunk))})',
                chunk,
            )
            states.update(cursor.fetchall())
        return states


def _last_starter(plan_id: str, blob: Any) -> str | None:
    if blob is None:
        return None
    try:
        history = decode_at(blob, f"execution plan {plan_id}: execution_history")
    except CorruptData:
        return None
    for entry in reversed(history if isinstance(history, list) else []):
        if isinstance(entry, dict) and entry.get("name") == "start execution":
            world_id = entry.get("world_id")
            return str(world_id) if world_id is not None else None
    return None
