"""Requests between worlds and their replies: ``dynflow_envelopes`` rows with a world inbox.

A request is addressed to a world (``world:<id>``) or to any executor serving a queue
(``executors`` for the ``default`` queue, ``executors:<queue>`` for another); its reply goes to the sender's reply inbox (``reply:<id>``). On PostgreSQL, the transaction that
stores one also sends a ``NOTIFY`` on the receiver's channel (`channel`), delivered when it
commits; on SQLite receivers poll. A request is deleted in the transaction that stores its
reply, after it was applied: a receiver that dies in between finds it again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import Any

from pydynflow.storage.codec import decode_at, encode
from pydynflow.storage.sql import ENVELOPES, StoreBase, wrap_errors

__all__ = ["ANY_EXECUTOR", "Requests", "channel", "executor_inbox", "reply_inbox", "world_inbox"]

ANY_EXECUTOR = "executors"
"""The inbox every executor world reads: that of the ``default`` queue, which all serve."""


def executor_inbox(queue: str) -> str:
    """Return the inbox read by every executor world that serves ``queue``."""
    return ANY_EXECUTOR if queue == "default" else f"{ANY_EXECUTOR}:{queue}"


def world_inbox(world_id: str) -> str:
    """Return the inbox of requests addressed to one world."""
    return f"world:{world_id}"


def reply_inbox(world_id: str) -> str:
    """Return the inbox of the replies a world's requests get."""
    return f"reply:{world_id}"


def channel(inbox: str) -> str:
    """Return the PostgreSQL ``LISTEN`` channel of an inbox (a valid identifier)."""
    return "pydynflow_" + hashlib.sha1(inbox.encode()).hexdigest()[:40]


class Requests(StoreBase):
    """Requests and replies between worlds (a part of `Storage`)."""

    @wrap_errors("post_request")
    def post_request(self, inbox: str, data: dict[str, Any]) -> int:
        """Store ``data`` in ``inbox``, wake its reader, and return the envelope's id."""
        with self._write_atomic():
            return self._insert(inbox, data)

    @wrap_errors("write_request")
    def write_request(self, inbox: str, data: dict[str, Any]) -> None:
        """`post_request` in the caller's transaction (the writer's), without reading the
        envelope's id back: on PostgreSQL it goes with the transaction's other statements,
        and its reader is woken when the transaction commits."""
        param = self._db.param
        with self._statements() as out:
            out.write(
                f'INSERT INTO "{ENVELOPES}" ("receiver_id", "data") VALUES ({param}, {param})',
                (inbox, encode(data)),
            )
            if self._postgres:
                out.write("SELECT pg_notify(%s, '')", (channel(inbox),))

    @wrap_errors("post_requests")
    def post_requests(self, envelopes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store ``(inbox, data)`` envelopes in one transaction and wake their readers."""
        with self._write_atomic():
            for inbox, data in envelopes:
                self._insert(inbox, data)

    def _insert(self, inbox: str, data: dict[str, Any]) -> int:
        param = self._db.param
        sql = f'INSERT INTO "{ENVELOPES}" ("receiver_id", "data") VALUES ({param}, {param})'
        cursor = self._db.cursor()
        if self._sqlite:
            cursor.execute(sql, (inbox, encode(data)))
            return int(cursor.lastrowid)
        cursor.execute(sql + ' RETURNING "id"', (inbox, encode(data)))
        envelope_id = int(cursor.fetchone()[0])
        cursor.execute("SELECT pg_notify(%s, '')", (channel(inbox),))
        return envelope_id

    @wrap_errors("inbox")
    def inbox(self, inboxes: Iterable[str], *, after: int = 0) -> list[tuple[int, str, Any]]:
        """Return ``(id, inbox, data)`` of the envelopes in ``inboxes`` with an id above
        ``after``, in id order."""
        names = list(inboxes)
        if not names:
            return []
        param = self._db.param
        cursor = self._db.cursor()
        cursor.execute(
            f'SELECT "id", "receiver_id", "data" FROM "{ENVELOPES}" '
            f'WHERE "receiver_id" IN ({", ".join([param] * len(names))}) AND "id" > {param} '
            'ORDER BY "id"',
            (*names, after),
        )
        return [
            (int(envelope_id), inbox, decode_at(blob, f"request {envelope_id} ({inbox})"))
            for envelope_id, inbox, blob in cursor.fetchall()
        ]

    @wrap_errors("answer_requests")
    def answer_requests(self, answers: Iterable[tuple[int, str | None, dict[str, Any]]]) -> None:
        """`answer_request` for each ``(request id, reply_to, reply)``, in one transaction."""
        with self._write_atomic():
            for request_id, reply_to, reply in answers:
                self.answer_request(request_id, reply_to, reply)

    @wrap_errors("answer_request")
    def answer_request(self, request_id: int, reply_to: str | None, reply: dict[str, Any]) -> bool:
        """Delete a request and, if it still existed, store ``reply`` for its sender
        (``reply_to``: the sender's world id, None for no reply); one transaction. Return
        whether the request existed (False: another reader answered it already).

        Envelope ids are reused on SQLite: a reply names its request by the token the
        request carried (`pydynflow.dispatch.client.RequestClient`), not by id."""
        param = self._db.param
        with self._write_atomic():
            cursor = self._db.cursor()
            cursor.execute(f'DELETE FROM "{ENVELOPES}" WHERE "id" = {param}', (request_id,))
            if cursor.rowcount != 1:
                return False
            if reply_to is not None:
                self._insert(reply_inbox(reply_to), reply)
            return True

    @wrap_errors("take_requests")
    def take_requests(
        self, request_ids: list[int], from_inbox: str, to_inbox: str
    ) -> list[tuple[int, Any]]:
        """Move the requests still in ``from_inbox`` to ``to_inbox``; return ``(id, data)``
        of those this call moved, in id order (of several executors reading one inbox, one
        takes each). The data is read again: an id may now be another request's (SQLite
        reuses the highest id once it is deleted)."""
        if not request_ids:
            return []
        param = self._db.param
        marks = ", ".join([param] * len(request_ids))
        with self._write_atomic():
            cursor = self._db.cursor()
            # Mark what this call moves with a receiver of its own, then name it ``to_inbox``.
            claim = f"{to_inbox}#{uuid.uuid4().hex}"
            cursor.execute(
                f'UPDATE "{ENVELOPES}" SET "receiver_id" = {param} '
                f'WHERE "id" IN ({marks}) AND "receiver_id" = {param}',
                (claim, *request_ids, from_inbox),
            )
            if cursor.rowcount == 0:
                return []
            cursor.execute(
                f'SELECT "id", "data" FROM "{ENVELOPES}" WHERE "receiver_id" = {param} '
                'ORDER BY "id"',
                (claim,),
            )
            taken = cursor.fetchall()
            cursor.execute(
                f'UPDATE "{ENVELOPES}" SET "receiver_id" = {param} WHERE "receiver_id" = {param}',
                (to_inbox, claim),
            )
        return [
            (int(envelope_id), decode_at(blob, f"request {envelope_id} ({to_inbox})"))
            for envelope_id, blob in taken
        ]

    @wrap_errors("move_inbox")
    def move_inbox(self, from_inbox: str, to_inbox: str) -> int:
        """Move every envelope of ``from_inbox`` to ``to_inbox`` (a dead world's requests
        back to every executor) and wake ``to_inbox``'s readers; return how many moved."""
        param = self._db.param
        with self._write_atomic():
            cursor = self._db.cursor()
            from_inbox_rows = self._in_id_order(f'"receiver_id" = {param}')
            cursor.execute(
                f'UPDATE "{ENVELOPES}" SET "receiver_id" = {param} WHERE {from_inbox_rows}',
                (to_inbox, from_inbox),
            )
            moved = int(cursor.rowcount)
            if moved and self._postgres:
                cursor.execute("SELECT pg_notify(%s, '')", (channel(to_inbox),))
            return moved

    @wrap_errors("clear_inboxes")
    def clear_inboxes(self, inboxes: Iterable[str]) -> int:
        """Delete every envelope of ``inboxes`` (a dead world's); return how many."""
        names = list(inboxes)
        param = self._db.param
        with self._write_atomic():
            cursor = self._db.cursor()
            receivers = f'"receiver_id" IN ({", ".join([param] * len(names))})'
            cursor.execute(f'DELETE FROM "{ENVELOPES}" WHERE {self._in_id_order(receivers)}', names)
            return int(cursor.rowcount)

    def _in_id_order(self, condition: str) -> str:
        """Return a condition selecting the envelopes that meet ``condition``, locked in id
        order on PostgreSQL (SQLite locks the whole database).

        An update or a delete by receiver locks rows in the order it finds them in the table,
        which is where their latest version was written, not their ids'. A world answers the
        requests it took in id order: the two must take their locks in one order, or each
        may hold a row the other waits for (PostgreSQL then fails one of them as a deadlock).
        That happens when one world moves or clears the inbox of another it found dead which
        is in fact still at work.
        """
        if not self._postgres:
            return condition
        return (
            f'"id" IN (SELECT "id" FROM "{ENVELOPES}" WHERE {condition} ORDER BY "id" FOR UPDATE)'
        )
