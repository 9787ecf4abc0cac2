"""The worlds sharing a database: the ``dynflow_worlds`` rows and their heartbeats.

Times come from the database's clock (PostgreSQL's ``now()``; on SQLite, whose processes
share one host, that host's clock), so that a host whose clock is off does not make every
other world look dead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.sql import StoreBase, wrap_errors

__all__ = ["WORLDS", "Worlds"]

WORLDS = "dynflow_worlds"
_COLUMNS = ("id", "name", "executor", "queues", "pid", "hostname", "started_at", "last_seen")
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
    ) -> None:
        """Record a world as started now and seen now (replacing a record of the same id)."""
        param = self._db.param
        now, now_args = self._now_sql()
        sql = (
            f'INSERT INTO "{WORLDS}" ({_NAMES}) '
            f"VALUES ({param}, {param}, {param}, {param}, {param}, {param}, {now}, {now}) "
            'ON CONFLICT ("id") DO UPDATE SET "last_seen" = excluded."last_seen"'
        )
        values = (world_id, name, executor, json.dumps(queues), pid, hostname)
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
