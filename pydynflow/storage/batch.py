"""Few round trips per PostgreSQL transaction: multi-row upserts and held-back statements.

On PostgreSQL each statement is a round trip to the server, and a round trip costs a server
wake-up and a client wake-up, more than the statement's own work for the few rows a group
commit writes. So the writer's transactions send their statements together:

* `Upsert` writes many rows of one table in one ``INSERT ... ON CONFLICT`` statement: the
  rows go as one JSON array that the server unpacks (``json_populate_recordset``), through a
  statement prepared once per connection; rows JSON cannot carry (a NaN) go as ``VALUES``.
  psycopg2 binds every parameter: nothing is interpolated by hand.
* `StatementBatch` holds back a transaction's statements, ``BEGIN`` first, and sends them as
  one query string: with ``COMMIT`` at the end, or with the first statement whose result is
  needed (a conditional update's row count, an inserted id). A transaction with no such
  statement is one round trip.

SQLite runs in the same process: there, `Upsert` is one ``executemany`` and nothing is held
back (`Immediate`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import operator
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MULTI_ROWS", "Immediate", "StatementBatch", "Upsert"]

MULTI_ROWS = 500
"""Rows in one multi-row statement at most (a bigger write is cut into several)."""


class Upsert:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of all ``columns`` of ``table``.

    Args:
        table: the table's name.
        columns: the columns a row gives, in order.
        key: the conflict target (columns of a unique index); every other column is updated.
        param: the driver's placeholder (``?`` or ``%s``).
    """

    __slots__ = (
        "_columns",
        "_execute",
        "_head",
        "_key",
        "_prepare",
        "_row",
        "_tail",
        "json_sql",
        "name",
        "sql",
    )

    def __init__(
        self, table: str, columns: tuple[str, ...], key: tuple[str, ...], param: str
    ) -> None:
        names = ", ".join(f'"{column}"' for column in columns)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
        conflict = ", ".join(f'"{column}"' for column in key)
        self._columns = columns
        self._head = f'INSERT INTO "{table}" ({names}) VALUES '
        self._row = "(" + ", ".join([param] * len(columns)) + ")"
        self._tail = f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        self._key: Callable[[Sequence[Any]], Any] = operator.itemgetter(
            *(columns.index(column) for column in key)
        )
        self.sql = self._head + self._row + self._tail
        """The statement for one row."""
        from_json = (
            f'INSERT INTO "{table}" ({names}) SELECT {names} '
            f'FROM json_populate_recordset(NULL::"{table}", $1){self._tail}'
        )
        self.json_sql = from_json.replace("$1", param)
        """The rows-as-JSON statement, unprepared (one parameter: the JSON array)."""
        self.name = f"pydynflow_upsert_{zlib.crc32(from_json.encode()):08x}"
        """The prepared statement's name (the same statement has the same name anywhere)."""
        self._prepare = f'PREPARE "{self.name}"(json) AS {from_json}'.encode()
        self._execute = f'EXECUTE "{self.name}"({param})'

    def preparation(self, cursor: Any) -> bytes | None:
        """Return the ``PREPARE`` that `statements` needs first on ``cursor``'s connection,
        or None if the connection has it (see `prepared`)."""
        if self.name in _prepared.get(cursor.connection, ()):
            return None
        return self._prepare

    def statements(self, cursor: Any, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Return the multi-row statements writing ``rows``, bound by psycopg2's ``cursor``
        (after `preparation`, once per connection).

        A key given twice is written once, with its last row: one statement may not update
        a row twice, and the last of several upserts of a row is what they leave.
        """
        if len({self._key(row) for row in rows}) < len(rows):
            rows = list({self._key(row): row for row in rows}.values())
        statements = []
        columns = self._columns
        for first in range(0, len(rows), MULTI_ROWS):
            part = rows[first : first + MULTI_ROWS]
            try:
                document = json.dumps(
                    [dict(zip(columns, row, strict=True)) for row in part],
                    default=_json_value,
                    allow_nan=False,
                    ensure_ascii=False,
                )
            except (TypeError, ValueError):  # a NaN, or a value JSON has no form for
                sql = self._head + ", ".join([self._row] * len(part)) + self._tail
                statements.append(cursor.mogrify(sql, [value for row in part for value in row]))
            else:
                statements.append(cursor.mogrify(self._execute, (document,)))
        return statements


_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
"""The prepared statements of each PostgreSQL connection (a new connection has none)."""


def prepared(connection: Any, name: str) -> None:
    """Note that ``connection`` has the prepared statement ``name``: only once the
    ``PREPARE`` has run. (A query string that failed before it did not run it; one that
    failed after it did, for a rollback does not undo a ``PREPARE``: `StatementBatch.abort`
    asks the server which.)"""
    _prepared.setdefault(connection, set()).add(name)


def _json_value(value: Any) -> str:
    """Return what the server's JSON input takes for a ``bytea`` or ``timestamp`` value.

    Raises:
        TypeError: for anything else, an aware datetime too (psycopg2 binds it as a
            ``timestamptz``, which the server converts): the rows then go as ``VALUES``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__qualname__} in a row")


class Immediate:
    """Where a write's statements go outside a `StatementBatch`: executed at once."""

    __slots__ = ("_many", "cursor")

    def __init__(self, cursor: Any, multi_row: bool) -> None:
        self.cursor = cursor
        self._many = multi_row

    def write(self, sql: str, params: Sequence[Any]) -> None:
        """Execute ``sql`` now."""
        self.cursor.execute(sql, params)

    def ask(self, sql: str, params: Sequence[Any]) -> Any:
        """Execute ``sql`` now; return the cursor, which holds its result."""
        self.cursor.execute(sql, params)
        return self.cursor

    def upsert(self, upsert: Upsert, rows: Sequence[Sequence[Any]]) -> None:
        """Upsert ``rows`` now: multi-row statements on PostgreSQL, else ``executemany``."""
        if not rows:
            return
        if self._many:
            preparation = upsert.preparation(self.cursor)
            if preparation is not None:
                self.cursor.execute(preparation)
                prepared(self.cursor.connection, upsert.name)
            for statement in upsert.statements(self.cursor, rows):
                self.cursor.execute(statement)
        else:
            self.cursor.executemany(upsert.sql, rows)


class StatementBatch:
    """The statements of one PostgreSQL transaction, held back to be sent together.

    It starts with ``BEGIN``, unsent. `write` and `upsert` append statements; `ask` sends
    those held back with one more statement whose result the caller reads from the cursor;
    `commit` sends the rest with ``COMMIT``. The connection must be in autocommit mode
    (peewee's), so that the ``BEGIN`` and ``COMMIT`` sent are the transaction's bounds.
    """

    __slots__ = ("began", "cursor", "pending", "preparing")

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.pending: list[bytes] = [b"BEGIN"]
        self.began = False
        """Whether ``BEGIN`` was sent (a rollback is then due if the transaction fails)."""
        self.preparing: list[str] = []  # prepared statements held back, not yet sent

    def write(self, sql: str, params: Sequence[Any]) -> None:
        """Hold back ``sql`` with its ``params`` bound."""
        self.pending.append(self.cursor.mogrify(sql, params))

    def upsert(self, upsert: Upsert, rows: Sequence[Sequence[Any]]) -> None:
        """Hold back the statements upserting ``rows``."""
        if not rows:
            return
        preparation = upsert.preparation(self.cursor)
        if preparation is not None and upsert.name not in self.preparing:
            self.pending.append(preparation)
            self.preparing.append(upsert.name)
        self.pending.extend(upsert.statements(self.cursor, rows))

    def ask(self, sql: str, params: Sequence[Any]) -> Any:
        """Send what is held back and ``sql`` in one round trip; return the cursor, which
        holds the result of ``sql`` (row count, rows)."""
        self.pending.append(self.cursor.mogrify(sql, params))
        self._send()
        return self.cursor

    def flush(self) -> None:
        """Send what is held back (before a statement that does not go through the batch)."""
        if self.pending:
            self._send()

    def commit(self) -> None:
        """Send what is held back with ``COMMIT``: once it returns, the transaction is durable
        (as the server's ``synchronous_commit`` says)."""
        self.pending.append(b"COMMIT")
        self._send()

    def abort(self) -> None:
        """Roll back what was sent, if anything; drop what was held back.

        A failed rollback (a lost connection) is not raised: the failure that led here is
        the one to report, and the server rolls back a transaction whose connection is gone.
        """
        self.pending = []
        unsure, self.preparing = self.preparing, []
        if self.began:
            with contextlib.suppress(Exception):
                self.cursor.execute("ROLLBACK")
                if unsure:  # sent with the query string that failed: did they run?
                    self.cursor.execute(
                        "SELECT name FROM pg_prepared_statements WHERE name = ANY(%s)", (unsure,)
                    )
                    for (name,) in self.cursor.fetchall():
                        prepared(self.cursor.connection, name)

    def _send(self) -> None:
        statements, self.pending = self.pending, []
        self.began = True  # a failure from here on may have left the transaction open
        self.cursor.execute(b";".join(statements))
        if self.preparing:
            for name in self.preparing:
                prepared(self.cursor.connection, name)
            self.preparing = []
