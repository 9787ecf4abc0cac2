"""Output chunks: an action's append-only streaming output, kept in insertion order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydynflow.storage.codec import decode_at, encode
from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.sql import CHUNKS, StoreBase, wrap_errors

__all__ = ["Chunks"]


class Chunks(StoreBase):
    """The actions' output chunks (a part of `Storage`)."""

    @wrap_errors("add_output_chunks")
    def add_output_chunks(
        self, chunks: Iterable[tuple[str, int, Any, str | None, datetime]]
    ) -> None:
        """Append output chunks in one transaction, in the given order.

        Args:
            chunks: ``(plan id, action id, chunk, kind, timestamp)`` tuples; ``chunk`` is any
                value `encode` accepts, ``kind`` a free label such as ``"stdout"`` (or
                ``None``), ``timestamp`` an aware datetime (a naive one is taken as UTC).
                The plan rows must exist.

        Raises:
            SerializationError: if a chunk cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        dt = self._dt
        rows = [
            (str(plan_id), int(action_id), encode(chunk), kind, dt(timestamp))
            for plan_id, action_id, chunk, kind, timestamp in chunks
        ]
        if not rows:
            return
        param = self._db.param
        sql = (
            f'INSERT INTO "{CHUNKS}" ("execution_plan_uuid", "action_id", "chunk", "kind", '
            f'"timestamp") VALUES ({", ".join([param] * 5)})'
        )
        with self._write_atomic():
            self._executemany(self._db.cursor(), sql, rows)

    @wrap_errors("output_chunks")
    def output_chunks(self, plan_id: str, action_id: int) -> list[dict[str, Any]]:
        """Return an action's output chunks in insertion order.

        Returns:
            ``{"chunk": value, "kind": str | None, "timestamp": aware UTC datetime}`` dicts.

        Raises:
            CorruptData: if a stored chunk does not decode.
        """
        plan_id, action_id = str(plan_id), int(action_id)
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "id", "chunk", "kind", "timestamp" FROM "{CHUNKS}" '
            f'WHERE "execution_plan_uuid" = {param} AND "action_id" = {param} ORDER BY "id"',
            (plan_id, action_id),
        )
        where = f"execution plan {plan_id}: action {action_id} output chunk"
        return [
            {
                "chunk": decode_at(blob, f"{where} {chunk_id}"),
                "kind": kind,
                "timestamp": from_db_datetime(timestamp),
            }
            for chunk_id, blob, kind, timestamp in cursor.fetchall()
        ]

    @wrap_errors("delete_output_chunks")
    def delete_output_chunks(self, plan_id: str, action_id: int | None = None) -> int:
        """Delete the output chunks of one action, or of the whole plan when ``action_id`` is None.

        Returns:
            how many chunks were deleted.
        """
        param = self._db.param
        sql = f'DELETE FROM "{CHUNKS}" WHERE "execution_plan_uuid" = {param}'
        params: tuple[Any, ...] = (str(plan_id),)
        if action_id is not None:
            sql += f' AND "action_id" = {param}'
            params += (int(action_id),)
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(sql, params)
            return max(cursor.rowcount, 0)
