"""Coordinator records: small named blobs shared by the processes of one database.

Dynflow keeps worlds and locks there; pydynflow's writer keeps its ledger there
(`pydynflow.storage.writer.ledger`) and singleton actions their locks
(`pydynflow.storage.singleton_lock`). A record is ``(id, class)`` with an owner and its data,
stored as given.
"""

from __future__ import annotations

from collections.abc import Callable

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
        with self._statements() as out:  # held back in a batched transaction
            out.write(sql, (record_id, record_class, owner_id, data))

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

    @wrap_errors("record_owner")
    def record_owner(self, record_class: str, record_id: str) -> str | None:
        """Return the owner of the coordinator record ``(record_id, record_class)``, or None."""
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "owner_id" FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}',
            (record_id, record_class),
        )
        row = cursor.fetchone()
        return None if row is None else row[0]

    @wrap_errors("records_of")
    def records_of(self, record_class: str) -> list[tuple[str, str | None, bytes | None]]:
        """Return ``(id, owner, data)`` of every coordinator record of ``record_class``."""
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "id", "owner_id", "data" FROM "{COORDINATOR}" '
            f'WHERE "class" = {self._db.param} ORDER BY "id"',
            (record_class,),
        )
        return [
            (record_id, owner, None if data is None else bytes(data))
            for record_id, owner, data in cursor.fetchall()
        ]

    @wrap_errors("take_record")
    def take_record(
        self,
        record_class: str,
        record_id: str,
        owner_id: str,
        data: bytes | None = None,
        *,
        stale: Callable[[str | None, bytes | None], bool] | None = None,
    ) -> str | None:
        """Make ``owner_id`` the owner of the record ``(record_id, record_class)``, unless
        another owner holds it; return the owner holding it afterwards.

        Atomic across processes and hosts: the record is created by a conditional insert
        (``ON CONFLICT DO NOTHING``, then the row count says who won), and taken over from a
        holder only by an update conditional on that holder still owning it. A record
        ``owner_id`` holds already is left as it is. ``stale(holder, data)``, called inside
        the transaction (it may read this storage), says whether the current holder's claim
        is void, so that the record may be taken over.
        """
        param = self._db.param
        insert = (
            f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
            f"VALUES ({param}, {param}, {param}, {param}) "
            'ON CONFLICT ("id", "class") DO NOTHING'
        )
        select = (
            f'SELECT "owner_id", "data" FROM "{COORDINATOR}" '
            f'WHERE "id" = {param} AND "class" = {param}'
        )
        key = (record_id, record_class)
        with self._write_atomic():
            cursor = self._db.cursor()
            for _ in range(3):  # a holder may let go between our insert and our read
                cursor.execute(insert, (*key, owner_id, data))
                if cursor.rowcount == 1:
                    return owner_id
                cursor.execute(select, key)
                row = cursor.fetchone()
                if row is None:
                    continue
                holder: str | None = row[0]
                held = None if row[1] is None else bytes(row[1])
                if holder == owner_id or stale is None or not stale(holder, held):
                    return holder
                if self._replace_owner(key, holder, owner_id, data):
                    return owner_id
            cursor.execute(select, key)
            row = cursor.fetchone()
            return None if row is None else row[0]

    def _replace_owner(
        self, key: tuple[str, str], holder: str | None, owner_id: str, data: bytes | None
    ) -> bool:
        """Give the record at ``key`` to ``owner_id`` if ``holder`` still owns it."""
        param = self._db.param
        held = f'"owner_id" = {param}' if holder is not None else '"owner_id" IS NULL'
        sql = (
            f'UPDATE "{COORDINATOR}" SET "owner_id" = {param}, "data" = {param} '
            f'WHERE "id" = {param} AND "class" = {param} AND {held}'
        )
        values = (owner_id, data, *key) + ((holder,) if holder is not None else ())
        cursor = self._db.cursor()
        cursor.execute(sql, values)
        return bool(cursor.rowcount == 1)

    @wrap_errors("delete_record")
    def delete_record(self, record_class: str, record_id: str, owner_id: str | None = None) -> int:
        """Delete the coordinator record ``(record_id, record_class)``; return how many (0/1).

        With ``owner_id``, only while that owner holds it (a lock is let go by its holder
        only).
        """
        param = self._db.param
        sql = f'DELETE FROM "{COORDINATOR}" WHERE "id" = {param} AND "class" = {param}'
        values: tuple[str, ...] = (record_id, record_class)
        if owner_id is not None:
            sql += f' AND "owner_id" = {param}'
            values += (owner_id,)
        with self._statements() as out:  # in a batched transaction: one round trip
            return int(out.ask(sql, values).rowcount)

    @wrap_errors("delete_records_of")
    def delete_records_of(self, record_class: str, owner_id: str) -> int:
        """Delete every record of ``record_class`` that ``owner_id`` holds; return how many."""
        param = self._db.param
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                f'DELETE FROM "{COORDINATOR}" WHERE "class" = {param} AND "owner_id" = {param}',
                (record_class, owner_id),
            )
            return int(cursor.rowcount)
