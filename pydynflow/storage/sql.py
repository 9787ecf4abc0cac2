"""What every part of `Storage` shares: tables, SQL text, transactions and driver errors.

`StoreBase` holds the database and its dialect, opens write and read transactions and turns
driver errors into `PersistenceError` (`wrap_errors`), dropping a connection they broke. Writes
are upserts (``INSERT ... ON CONFLICT (...) DO UPDATE``, the same SQL on SQLite >= 3.24 and
PostgreSQL) sent with ``executemany`` on the raw DB-API cursor on SQLite, as multi-row
statements on PostgreSQL (`pydynflow.storage.batch`), where a batched transaction also holds
its statements back to send them together (`StoreBase._batched`).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import peewee

from pydynflow.errors import PersistenceError
from pydynflow.storage.batch import Immediate, StatementBatch
from pydynflow.storage.database import is_postgres, is_sqlite, redact_url
from pydynflow.storage.times import naive_from_micros, naive_utc, sqlite_datetime, sqlite_text

try:  # PostgreSQL support is optional (the "postgres" extra)
    import psycopg2
    import psycopg2.extras
except ImportError:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None

__all__ = [
    "ACTIONS",
    "CHILD_TABLES",
    "CHUNKS",
    "COORDINATOR",
    "DRIVER_ERRORS",
    "ENVELOPES",
    "IN_CHUNK",
    "PLANS",
    "STEPS",
    "StoreBase",
    "select_sql",
    "upsert_sql",
    "wrap_errors",
]

PLANS = "dynflow_execution_plans"
ACTIONS = "dynflow_actions"
STEPS = "dynflow_steps"
ENVELOPES = "dynflow_envelopes"
CHUNKS = "dynflow_output_chunks"
COORDINATOR = "dynflow_coordinator_records"
CHILD_TABLES = (CHUNKS, "dynflow_delayed_plans", STEPS, ACTIONS)
"""The tables whose rows belong to one plan (``execution_plan_uuid``), deleted with it."""
IN_CHUNK = 500
"""Values in one ``IN (...)`` list at most."""

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    peewee.DatabaseError,
    peewee.InterfaceError,
    sqlite3.Error,
) + ((psycopg2.Error,) if psycopg2 is not None else ())
"""What the drivers raise; `wrap_errors` turns these into `PersistenceError`."""

_F = TypeVar("_F", bound=Callable[..., Any])


def upsert_sql(table: str, columns: tuple[str, ...], key: tuple[str, ...], param: str) -> str:
    """Return the statement that inserts a row of ``columns`` or updates the one at ``key``."""
    names = ", ".join(f'"{column}"' for column in columns)
    values = ", ".join([param] * len(columns))
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
    conflict = ", ".join(f'"{column}"' for column in key)
    return (
        f'INSERT INTO "{table}" ({names}) VALUES ({values}) '
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )


def select_sql(table: str, columns: tuple[str, ...]) -> str:
    """Return ``SELECT`` of ``columns`` from ``table``, to be followed by its clauses."""
    return "SELECT " + ", ".join(f'"{column}"' for column in columns) + f' FROM "{table}"'


def wrap_errors(operation: str) -> Callable[[_F], _F]:
    """Turn driver errors raised by the decorated method into `PersistenceError`."""

    def decorator(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: StoreBase, *args: Any, **kwargs: Any) -> Any:
            if self._closed:
                raise PersistenceError(f"{operation}: the storage is closed ({self._describe()})")
            try:
                return method(self, *args, **kwargs)
            except DRIVER_ERRORS as exc:
                self._after_driver_error()
                raise PersistenceError(
                    f"{operation} failed ({self._describe()}): {type(exc).__name__}: {exc}"
                ) from exc

        return wrapper  # type: ignore[return-value]

    return decorator


class StoreBase:
    """The database a `Storage` uses, its dialect, and the helpers each of its parts shares.

    Threads: any number may share it; each has its own connection (peewee's thread-local
    connection state) and its own transaction stack.
    """

    def __init__(self, database: peewee.Database, *, url: str | None, owned: bool) -> None:
        """Use ``database`` (opened from ``url``, if it was; ``owned``: close it with us)."""
        self._db = database
        self._owned = owned
        self.url = url
        self._closed = False
        self._sqlite = is_sqlite(database)
        self._postgres = is_postgres(database)
        # What a column takes for a datetime, and for a snapshot's microseconds.
        self._dt: Callable[[datetime | None], Any] = sqlite_datetime if self._sqlite else naive_utc
        self._time_value: Callable[[int | None], Any] = (
            sqlite_text if self._sqlite else naive_from_micros
        )
        self._local = threading.local()  # .batch: where `_batched` writes go, if inside one

    def _write_atomic(self) -> Any:
        """Return a write transaction (a savepoint inside one); ``BEGIN IMMEDIATE`` on SQLite,
        which takes the write lock up front and so waits for ``busy_timeout`` instead of
        failing on a lock upgrade."""
        if self._sqlite:
            return _Atomic(self._db.atomic(lock_type="IMMEDIATE"))
        batch = getattr(self._local, "batch", None)
        if batch is not None:  # the savepoint's statements go after those held back
            batch.flush()
        return _Atomic(self._db.atomic())

    def _read_atomic(self) -> Any:
        """Return a read transaction: queries in it see one snapshot (``REPEATABLE READ`` on
        PostgreSQL)."""
        if self._postgres:
            batch = getattr(self._local, "batch", None)
            if batch is not None:  # a read sees the writes held back
                batch.flush()
            return self._db.atomic(isolation_level="REPEATABLE READ")
        return self._db.atomic()

    @contextmanager
    def _statements(self) -> Iterator[StatementBatch | Immediate]:
        """Yield where a write's statements go: held back in this thread's batched
        transaction, or else executed at once in a transaction of their own (a savepoint
        inside one)."""
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            yield batch
            return
        with self._write_atomic():
            yield Immediate(self._db.cursor(), self._postgres)

    @contextmanager
    def _batched(self) -> Iterator[None]:
        """Run the block in one write transaction whose statements are sent together.

        Outside any transaction, on SQLite, the writes that go through `_statements` run
        at once without a savepoint each. On PostgreSQL they are held back (`StatementBatch`) and sent with ``BEGIN`` and ``COMMIT`` in one round
        trip, or with the first statement whose result is needed (`StatementBatch.ask`), or
        just before a statement that does not go through `_statements` (a savepoint, a read
        transaction). Inside a transaction it is `_write_atomic`. Inside it, read only
        through `_read_atomic`: a bare query on the cursor would not see the writes held
        back.
        """
        if self._db.in_transaction():
            with self._write_atomic():
                yield
            return
        if not self._postgres:
            # SQLite: statements run at once, on one cursor, without the savepoint each
            # `_statements` block would open: a failure rolls the whole transaction back.
            with self._write_atomic():
                self._local.batch = Immediate(self._db.cursor(), False)
                try:
                    yield
                finally:
                    self._local.batch = None
            return
        batch = StatementBatch(self._db.cursor())
        self._local.batch = batch
        self._db.push_transaction(batch)  # peewee: a nested atomic block is a savepoint
        try:
            try:
                yield
            finally:
                self._local.batch = None
            batch.commit()
        except BaseException:
            batch.abort()
            raise
        finally:
            self._db.pop_transaction()

    def _executemany(self, cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._postgres and psycopg2 is not None:
            psycopg2.extras.execute_batch(cursor, sql, rows, page_size=200)
        else:
            cursor.executemany(sql, rows)

    def _after_driver_error(self) -> None:
        """Drop this thread's connection if it broke, so the next call reconnects.

        Broken: PostgreSQL lost it (psycopg2 no longer knows its transaction status), or
        SQLite still holds a transaction outside any of ours (a rollback that failed), in
        which every later ``BEGIN`` would fail. Closing a SQLite connection rolls that back.
        """
        db = self._db
        try:
            if db.is_closed() or db.in_transaction():
                return
            left_open = self._sqlite and db.connection().in_transaction
            if left_open or not db.is_connection_usable():
                db.close()
        except Exception:  # the connection is beyond closing cleanly; forget it
            state = getattr(db, "_state", None)
            if state is not None:
                state.reset()

    def _describe(self) -> str:
        if self.url is not None:
            return redact_url(self.url)
        return f"{type(self._db).__name__}({getattr(self._db, 'database', '?')!r})"


class _Atomic:
    """A peewee atomic block whose failed rollback does not hide why it rolled back.

    SQLite rolls a transaction back by itself on some errors (``SQLITE_FULL``: "database or
    disk is full"), and a lost PostgreSQL connection cannot roll back at all: peewee's own
    ``ROLLBACK`` then fails as well ("cannot rollback - no transaction is active", "connection
    already closed"), and that error would replace the one worth reporting.
    """

    __slots__ = ("_block",)

    def __init__(self, block: Any) -> None:
        self._block = block

    def __enter__(self) -> Any:
        return self._block.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> bool:
        try:
            return bool(self._block.__exit__(exc_type, exc, traceback))
        except DRIVER_ERRORS as failed:
            if exc is not None:
                return False  # the block's own error goes on
            first = _first_failure(failed)
            if first is failed:
                raise
            raise first from None  # the commit's, which the rollback after it hid


def _first_failure(exc: BaseException) -> BaseException:
    """Return the driver error that ``exc`` (raised while handling it) followed.

    A failed rollback is raised while the error that caused it is being handled, so the
    earliest of the driver errors linked by ``__context__`` is the original one.
    """
    while isinstance(exc.__context__, DRIVER_ERRORS):
        exc = exc.__context__
    return exc
