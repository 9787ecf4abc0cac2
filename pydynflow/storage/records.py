"""Coordinator records: small named blobs shared by the processes of one database.

Dynflow keeps worlds and locks there; pydynflow's writer keeps its ledger there
(`pydynflow.storage.writer.ledger`). A record is ``(id, class)`` with an owner and its data,
stored as given.
"""

from __future__ import annotations

from pydynflow.storage.sql import COORDINATOR, StoreBase, wrap_errors

__all__ = ["Records"]


class Records(StoreBase):
    """The coordinator records (a part of `Storage`)."""

    @wrap_errors("put_record")
    def put_record(
        self, record_class: str, record_id: str, data: bytes | None, owner_id: str | None = None
    ) -> None:
        """Create or replace the coordinator record ``(record_id, record_class)``.

        Coordinator records are small named blobs shared by the processes of one database
        (Dynflow keeps worlds and locks there); ``data`` is stored as given.
        """
        param = self._db.param
        sql = (
            f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
            f"VALUES ({param}, {param}, {param}, {param}) "
            'ON CONFLICT ("id", "class") DO UPDATE SET "owner_id" = excluded."owner_id", '
            '"data" = excluded."data"'
        )
        with self._write_atomic():
            self._db.cursor().execute(sql, (record_id, record_class, owner_id, data))

    @wrap_errors("put_record_data")
    def put_record_data(
        self, record_class: str, record_id: str, data: bytes | None, owner_id: str | None = None
    ) -> None:
        """Create the coordinator record ``(record_id, record_class)`` or replace its data.

        ``owner_id`` is set when the record is created; unlike `put_record`, an existing
        record keeps its owner, and its owner index is not touched, which matters for a
        record rewritten in every transaction (the writer's ledger: a page less per commit).
        """
        param = self._db.param
        sql = (
            f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
            f"VALUES ({param}, {param}, {param}, {param}) "
            'ON CONFLICT ("id", "class") DO UPDATE SET "data" = excluded."data"'
        )
        with self._write_atomic():
            self._db.cursor().execute(sql, (record_id, record_class, owner_id, data))

    @wrap_errors("record")
    def record(self, record_class: str, record_id: str) -> bytes | None:
        """Return the data of the coordinator record ``(record_id, record_class)``, or None."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "data" FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}',
            (record_id, record_class),
        )
        row = cursor.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    @wrap_errors("delete_record")
    def delete_record(self, record_class: str, record_id: str) -> int:
        """Delete the coordinator record ``(record_id, record_class)``; return how many (0/1)."""
        param = self._db.param
        sql = f'DELETE FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}'
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, (record_id, record_class))
            return int(cursor.rowcount)
