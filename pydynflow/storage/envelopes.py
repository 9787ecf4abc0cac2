"""Events accepted for a step and not yet processed: the ``dynflow_envelopes`` rows.

A step's events are rows whose ``receiver_id`` is ``"<plan id>:<step id>"``; ``data`` holds
``encode({"plan_id": ..., "step_id": ..., "payload": ...[, "event_id": ...]})``. Other
receivers (a world's inbox, say) share the table and are never returned or deleted here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydynflow.errors import DataConsistencyError
from pydynflow.storage.codec import decode_at, encode
from pydynflow.storage.sql import (
    COORDINATOR,
    ENVELOPES,
    IN_CHUNK,
    PLANS,
    StoreBase,
    wrap_errors,
)

__all__ = ["CHOSEN_EVENT_IDS", "Envelopes", "delete_envelope_ids", "envelope_rows"]

CHOSEN_EVENT_IDS = "pydynflow.EventId"
"""The coordinator records of event ids their senders chose: ``<plan>:<step>:<event id>``."""


def _chosen_key(plan_id: str, step_id: int, event_id: str) -> str:
    return f"{plan_id}:{step_id}:{event_id}"


class Envelopes(StoreBase):
    """The events stored for steps (a part of `Storage`)."""

    @wrap_errors("add_envelope")
    def add_envelope(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        event_id: str | None = None,
        chosen: bool = False,
    ) -> int:
        """Store an event for step ``step_id`` of plan ``plan_id`` and return its id.

        ``event_id`` names the event for its sender and in the plan's history (e.g. when
        it was not delivered); `envelopes` returns it with ``with_event_ids``. ``chosen``:
        the sender chose the id, so that the same id again is not applied again: it is
        also kept in a coordinator record (`chosen_event_ids`) once the event is gone.

        The plan row need not exist (the table has no foreign key). Ids grow with insertion
        order among the stored envelopes. On SQLite the id of the envelope with the highest id
        is reused once that envelope is deleted (the column is a rowid without
        ``AUTOINCREMENT``), so delete an envelope only once.

        Raises:
            SerializationError: if ``payload`` cannot be encoded.
            PersistenceError: if the database refuses the write.
        """
        with self._statements() as out:
            sql, params = self._envelope_statements(
                out, plan_id, step_id, payload, event_id, chosen
            )
            if self._sqlite:
                return int(out.ask(sql, params).lastrowid)
            return int(out.ask(sql + ' RETURNING "id"', params).fetchone()[0])

    @wrap_errors("write_envelope")
    def write_envelope(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        event_id: str | None = None,
        chosen: bool = False,
    ) -> None:
        """`add_envelope` without reading its id back: in a batched transaction (the
        writer's) its statements go with the others, in the transaction's one round trip."""
        with self._statements() as out:
            sql, params = self._envelope_statements(
                out, plan_id, step_id, payload, event_id, chosen
            )
            out.write(sql, params)

    def _envelope_statements(
        self,
        out: Any,
        plan_id: str,
        step_id: int,
        payload: Any,
        event_id: str | None,
        chosen: bool,
    ) -> tuple[str, tuple[Any, ...]]:
        """Write the chosen id's record (if any) to ``out``; return the envelope's INSERT."""
        plan_id, step_id = str(plan_id), int(step_id)
        envelope = {"plan_id": plan_id, "step_id": step_id, "payload": payload}
        if event_id is not None:
            envelope["event_id"] = str(event_id)
        data = encode(envelope)
        param = self._db.param
        if chosen and event_id is not None:
            out.write(
                f'INSERT INTO "{COORDINATOR}" ("id", "class", "owner_id", "data") '
                f"VALUES ({param}, {param}, {param}, NULL) "
                'ON CONFLICT ("id", "class") DO NOTHING',
                (_chosen_key(plan_id, step_id, str(event_id)), CHOSEN_EVENT_IDS, plan_id),
            )
        sql = f'INSERT INTO "{ENVELOPES}" ("receiver_id", "data") VALUES ({param}, {param})'
        return sql, (f"{plan_id}:{step_id}", data)

    @wrap_errors("keep_event")
    def keep_event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        event_id: str,
        chosen: bool = False,
        *,
        while_in: tuple[str, ...] = ("planned", "paused"),
    ) -> bool:
        """Store an event for a step of a plan that runs nowhere, if the plan is still in
        one of ``while_in``; return whether it was stored.

        The plan's row is locked while the event is stored (PostgreSQL: ``FOR UPDATE``;
        SQLite: the write transaction), so an executor's claim of the plan comes before
        (the event is not stored) or after (its supervisor finds the event).
        """
        lock = " FOR UPDATE" if self._postgres else ""
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(
                f'SELECT "state" FROM "{PLANS}" WHERE "uuid" = {self._db.param}{lock}',
                (str(plan_id),),
            )
            row = cursor.fetchone()
            if row is None or row[0] not in while_in:
                return False
            self.add_envelope(plan_id, step_id, payload, event_id, chosen)
            return True

    @wrap_errors("chosen_event_ids")
    def chosen_event_ids(self, plan_id: str) -> set[tuple[int, str]]:
        """Return ``(step id, event id)`` of every event of a plan whose sender chose its
        id (`add_envelope`), consumed or not."""
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "id" FROM "{COORDINATOR}" WHERE "class" = {self._db.param} '
            f'AND "owner_id" = {self._db.param}',
            (CHOSEN_EVENT_IDS, str(plan_id)),
        )
        found = set()
        for (key,) in cursor.fetchall():
            _, step_id, event_id = key.split(":", 2)
            found.add((int(step_id), event_id))
        return found

    @wrap_errors("envelopes")
    def envelopes(
        self, plan_id: str, step_id: int | None = None, *, with_event_ids: bool = False
    ) -> list[tuple[Any, ...]]:
        """Return the pending envelopes of a plan (or of one of its steps), in id order.

        Returns:
            ``(envelope id, step id, payload)`` tuples; with ``with_event_ids``,
            ``(envelope id, step id, payload, event id)`` (``"envelope-<id>"`` for an event
            stored without one).

        Raises:
            CorruptData: if an envelope's data does not decode.
            DataConsistencyError: if it decodes to something that is not an envelope.
        """
        plan_id = str(plan_id)
        cursor = self._db.cursor()
        if step_id is None:
            rows = envelope_rows(cursor, self._db.param, self._sqlite, [plan_id], with_data=True)
        else:
            cursor.execute(
                f'SELECT "id", "receiver_id", "data" FROM "{ENVELOPES}" '
                f'WHERE "receiver_id" = {self._db.param} ORDER BY "id"',
                (f"{plan_id}:{int(step_id)}",),
            )
            rows = cursor.fetchall()
        envelopes = []
        for envelope_id, receiver_id, blob in rows:
            where = f"execution plan {plan_id}: envelope {envelope_id} ({receiver_id})"
            data = decode_at(blob, where)
            if not isinstance(data, dict) or "payload" not in data:
                raise DataConsistencyError(f"{where} is a {type(data).__name__} without payload")
            envelope: tuple[Any, ...] = (envelope_id, _receiver(receiver_id)[1], data["payload"])
            if with_event_ids:
                envelope += (str(data.get("event_id") or f"envelope-{envelope_id}"),)
            envelopes.append(envelope)
        return envelopes

    @wrap_errors("delete_envelopes")
    def delete_envelopes(self, ids: Iterable[int]) -> int:
        """Delete envelopes by id and return how many were deleted (unknown ids are ignored)."""
        unique = list(dict.fromkeys(int(envelope_id) for envelope_id in ids))
        if not unique:
            return 0
        with self._write_atomic():
            return delete_envelope_ids(self._db.cursor(), self._db.param, unique)

    @wrap_errors("pop_envelope")
    def pop_envelope(self, plan_id: str, step_id: int) -> int:
        """Delete the oldest envelope of a step (the event it is now processing).

        Returns:
            how many were deleted (0 or 1).
        """
        with self._statements() as out:
            return int(out.ask(*self._pop_statement(plan_id, step_id)).rowcount)

    @wrap_errors("drop_oldest_envelope")
    def drop_oldest_envelope(self, plan_id: str, step_id: int) -> None:
        """`pop_envelope` without reading the count back (see `write_envelope`)."""
        with self._statements() as out:
            out.write(*self._pop_statement(plan_id, step_id))

    def _pop_statement(self, plan_id: str, step_id: int) -> tuple[str, tuple[str]]:
        param = self._db.param
        sql = (
            f'DELETE FROM "{ENVELOPES}" WHERE "id" = (SELECT MIN("id") FROM "{ENVELOPES}" '
            f'WHERE "receiver_id" = {param})'
        )
        return sql, (f"{plan_id}:{int(step_id)}",)

    @wrap_errors("clear_envelopes")
    def clear_envelopes(self, plan_id: str, step_id: int) -> int:
        """Delete every envelope of a step (its events die with it); return how many."""
        with self._statements() as out:
            return int(out.ask(*self._clear_statement(plan_id, step_id)).rowcount)

    @wrap_errors("drop_envelopes")
    def drop_envelopes(self, plan_id: str, step_id: int) -> None:
        """`clear_envelopes` without reading the count back (see `write_envelope`)."""
        with self._statements() as out:
            out.write(*self._clear_statement(plan_id, step_id))

    def _clear_statement(self, plan_id: str, step_id: int) -> tuple[str, tuple[str]]:
        sql = f'DELETE FROM "{ENVELOPES}" WHERE "receiver_id" = {self._db.param}'
        return sql, (f"{plan_id}:{int(step_id)}",)


def envelope_rows(
    cursor: Any, param: str, sqlite: bool, plan_ids: list[str], *, with_data: bool = False
) -> list[tuple[Any, ...]]:
    """Return ``(id, receiver_id[, data])`` of the envelopes of ``plan_ids``, in id order.

    Served by the ``receiver_id`` index: on SQLite a ``[plan_id + ":", plan_id + ";")``
    range (``BINARY`` collation, byte order); on PostgreSQL a ``LIKE 'plan_id:%'`` prefix
    match, because a range in a linguistic collation (``en_US``, ICU) does not hold every
    string with that prefix (punctuation is ignored at the first level). The prefix also
    matches a plan whose id extends the given one with ``:...``, so rows are then kept
    only if their receiver id is exactly ``<one of plan_ids>:<integer>``.
    """
    columns = '"id", "receiver_id", "data"' if with_data else '"id", "receiver_id"'
    wanted = set(plan_ids)
    rows: list[tuple[Any, ...]] = []
    step = max(IN_CHUNK // 2, 1)
    for start in range(0, len(plan_ids), step):
        part = plan_ids[start : start + step]
        if sqlite:
            clause = f'("receiver_id" >= {param} AND "receiver_id" < {param})'
            params = [bound for plan_id in part for bound in (f"{plan_id}:", f"{plan_id};")]
        else:
            clause = f"\"receiver_id\" LIKE {param} ESCAPE '!'"
            params = [_like_escape(plan_id) + ":%" for plan_id in part]
        where = " OR ".join([clause] * len(part))
        cursor.execute(f'SELECT {columns} FROM "{ENVELOPES}" WHERE {where} ORDER BY "id"', params)
        rows.extend(row for row in cursor.fetchall() if _receiver(row[1])[0] in wanted)
    if len(plan_ids) > step:
        rows.sort(key=lambda row: row[0])
    return rows


def delete_envelope_ids(cursor: Any, param: str, ids: list[int]) -> int:
    """Delete the envelopes with these ids; return how many were deleted."""
    deleted = 0
    for start in range(0, len(ids), IN_CHUNK):
        part = ids[start : start + IN_CHUNK]
        marks = ", ".join([param] * len(part))
        cursor.execute(f'DELETE FROM "{ENVELOPES}" WHERE "id" IN ({marks})', part)
        deleted += max(cursor.rowcount, 0)
    return deleted


def _receiver(receiver_id: str) -> tuple[str | None, int]:
    """Split an envelope's ``"<plan id>:<step id>"``; ``(None, 0)`` for any other receiver."""
    plan_id, sep, step = receiver_id.rpartition(":")
    if not sep:
        return None, 0
    try:
        return plan_id, int(step)
    except ValueError:
        return None, 0


def _like_escape(text: str) -> str:
    """Escape ``text`` for a ``LIKE ... ESCAPE '!'`` pattern (no backslash: it would depend on
    PostgreSQL's ``standard_conforming_strings``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
