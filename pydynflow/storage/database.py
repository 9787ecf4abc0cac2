"""Open a peewee database from a URL: SQLite (a file or in memory) or PostgreSQL.

Accepted URLs:

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``: a file in WAL mode,
  ``synchronous=FULL`` (``?synchronous=NORMAL`` to relax it), ``busy_timeout`` 5000 ms
  (``?busy_timeout=<ms>`` to change it), ``foreign_keys=1``.
* ``sqlite:///:memory:``: one in-memory database shared by every thread of the process that
  uses the returned object. It lives in SQLite's ``memdb`` VFS under a unique name
  (``file:/pydynflow-<uuid>?vfs=memdb``), which, unlike a shared-cache database, honours
  ``busy_timeout`` instead of failing with "database table is locked" when two threads write.
  A keeper connection holds it alive until `close_database`. (SQLite < 3.36 falls back to a
  shared-cache URI.) Each ``open_database("sqlite:///:memory:")`` call is a new database.
* ``postgresql://user:password@host:port/dbname?<libpq params>`` (also ``postgres://``): every
  query parameter is passed to libpq untouched (``sslmode``, ``options``, ``connect_timeout``,
  ...), so ``?options=-csearch_path%3Dmy_schema`` selects a schema.

Connections are per thread (peewee's default): a database object may be used from any thread,
each thread gets its own connection. `close_database` closes all of them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
import threading
import time
import uuid
import weakref
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee

from pydynflow.errors import PersistenceError

__all__ = [
    "ACCEPTED_SCHEMES",
    "close_database",
    "is_postgres",
    "is_sqlite",
    "open_database",
    "redact_url",
]

ACCEPTED_SCHEMES = ("sqlite:///<path>", "sqlite:///:memory:", "postgresql://", "postgres://")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_SQLITE_PARAMS = ("synchronous", "busy_timeout")
_PEEWEE_MAJOR = int(str(getattr(peewee, "__version__", "4")).split(".")[0])
_MEMDB = sqlite3.sqlite_version_info >= (3, 36, 0)


class _TrackedSqliteConnection(sqlite3.Connection):
    """A `sqlite3.Connection` that can be weakly referenced (for `close_database`)."""


class _ConnectionTracker:
    """Remember every live connection a database opened, in any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pydynflow_lock = threading.Lock()
        self._pydynflow_connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pydynflow_keeper: sqlite3.Connection | None = None
        super().__init__(*args, **kwargs)

    def _track(self, conn: Any) -> Any:
        with self._pydynflow_lock:
            self._pydynflow_connections.add(conn)
        return conn

    def close_all(self) -> None:
        """Close the connections of every thread (and the in-memory keeper, if any)."""
        with self._pydynflow_lock:
            connections = list(self._pydynflow_connections)
            self._pydynflow_connections.clear()
            keeper, self._pydynflow_keeper = self._pydynflow_keeper, None
        for conn in connections:
            with contextlib.suppress(Exception):  # already closed or broken: nothing to release
                conn.close()
        if keeper is not None:
            keeper.close()
        state = getattr(self, "_state", None)
        if state is not None:
            state.reset()  # this thread's peewee state: its connection is closed now


class PydynflowSqliteDatabase(_ConnectionTracker, peewee.SqliteDatabase):
    """`peewee.SqliteDatabase` that tracks its connections; see `open_database`."""

    memory: bool = False

    def _connect(self) -> Any:
        return self._track(super()._connect())  # type: ignore[misc]

    def _set_pragmas(self, conn: Any) -> None:
        cursor = conn.cursor()
        try:
            for pragma, value in self._pragmas:  # type: ignore[attr-defined]
                if pragma == "journal_mode":
                    self._set_journal_mode(cursor, str(value))
                else:
                    cursor.execute(f"PRAGMA {pragma} = {value}")
        finally:
            cursor.close()

    def _set_journal_mode(self, cursor: Any, mode: str) -> None:
        """Switch to ``mode`` (WAL), retrying while another connection holds a lock.

        Changing the journal mode of a fresh file needs an exclusive lock and SQLite reports
        "database is locked" at once, without its busy handler, if another connection is in a
        transaction (several processes or threads opening a new database together).
        """
        deadline = time.monotonic() + max(self._timeout, 0.1)  # type: ignore[attr-defined]
        delay = 0.001
        while True:
            try:
                current = cursor.execute("PRAGMA journal_mode").fetchone()
                if current and str(current[0]).lower() == mode.lower():
                    return
                cursor.execute(f"PRAGMA journal_mode = {mode}")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class PydynflowPostgresqlDatabase(_ConnectionTracker, peewee.PostgresqlDatabase):
    """`peewee.PostgresqlDatabase` that tracks its connections; see `open_database`."""

    def _connect(self) -> Any:
        return self._track(super()._connect())  # type: ignore[misc]


def is_sqlite(database: peewee.Database) -> bool:
    """Return whether ``database`` is a SQLite database."""
    return isinstance(database, peewee.SqliteDatabase)


def is_postgres(database: peewee.Database) -> bool:
    """Return whether ``database`` is a PostgreSQL database."""
    return isinstance(database, peewee.PostgresqlDatabase)


def close_database(database: peewee.Database) -> None:
    """Close every connection ``database`` holds, in all threads.

    Call it when nothing uses the database any more; an in-memory database is gone afterwards.
    """
    if isinstance(database, _ConnectionTracker):
        database.close_all()
    elif not database.is_closed():
        database.close()


def redact_url(url: str) -> str:
    """Return ``url`` without its password (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def open_database(url: str, *, create: bool = True) -> peewee.Database:
    """Return a peewee database for ``url`` (see the module docstring for the accepted forms).

    With ``create`` False, a SQLite file must exist already (a mistyped path fails instead
    of creating an empty database).

    Raises:
        ValueError: if the URL has another scheme or cannot be understood; the message names
            the URL and the accepted schemes.
        PersistenceError: ``create`` is False and the SQLite file does not exist, or the
            PostgreSQL driver (psycopg2) is not installed.
    """
    if not isinstance(url, str):
        raise ValueError(f"database URL must be a str, not {type(url).__qualname__}: {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return _open_sqlite(url, create)
    if scheme in ("postgresql", "postgres"):
        return _open_postgres(url)
    raise _bad_url(url, "unsupported scheme")


def _bad_url(url: str, why: str) -> ValueError:
    return ValueError(
        f"cannot open database URL {redact_url(url)!r}: {why}; "
        f"accepted: {', '.join(ACCEPTED_SCHEMES)}"
    )


def _open_sqlite(url: str, create: bool = True) -> peewee.Database:
    if not url.lower().startswith("sqlite:///"):
        raise _bad_url(url, "a SQLite URL needs three slashes (sqlite:///path)")
    rest = url[len("sqlite:///") :]
    path, _, query = rest.partition("?")
    path = unquote(path)
    if not path:
        raise _bad_url(url, "no database path")
    params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    unknown = sorted(set(params) - set(_SQLITE_PARAMS))
    if unknown:
        raise _bad_url(
            url, f"unknown SQLite parameter(s) {unknown}; known: {', '.join(_SQLITE_PARAMS)}"
        )
    synchronous = params.get("synchronous", "FULL").upper()
    if synchronous not in _SYNCHRONOUS:
        raise _bad_url(url, f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    try:
        busy_timeout = int(params.get("busy_timeout", "5000"))
    except ValueError:
        raise _bad_url(url, "busy_timeout must be an integer (milliseconds)") from None

    memory = path == ":memory:"
    pragmas: list[tuple[str, Any]] = [
        ("busy_timeout", busy_timeout),
        ("foreign_keys", 1),
        ("synchronous", synchronous),
    ]  # journal_mode (files only) goes right after busy_timeout
    connect_params: dict[str, Any] = {
        "check_same_thread": False,
        "factory": _TrackedSqliteConnection,
    }
    if memory:
        name = f"pydynflow-{uuid.uuid4().hex}"
        target = f"file:/{name}?vfs=memdb" if _MEMDB else f"file:{name}?mode=memory&cache=shared"
        connect_params["uri"] = True
    else:
        target = path
        pragmas.insert(1, ("journal_mode", "wal"))
        if not create and not os.path.exists(path):
            raise PersistenceError(
                f"no database at {os.path.abspath(path)} ({url}): a client world "
                "(executor=False) opens only an existing database; check the path, or create "
                "the database by starting an executor world on it (or pass create=True)"
            )
    database = PydynflowSqliteDatabase(
        target, pragmas=pragmas, timeout=busy_timeout / 1000.0, **connect_params
    )
    database.memory = memory
    if memory:
        # The keeper keeps the in-memory database alive while no thread holds a connection.
        database._pydynflow_keeper = sqlite3.connect(target, uri=True, check_same_thread=False)
    return database


def _open_postgres(url: str) -> peewee.Database:
    try:
        importlib.import_module("psycopg2")
    except ImportError as exc:
        raise PersistenceError(
            f"PostgreSQL needs the psycopg2 driver, which is not installed ({exc}): "
            "pip install 'pydynflow[postgres]'"
        ) from exc
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad_url(url, str(exc)) from None
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise _bad_url(url, "no database name in the path")
    params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.hostname:
        params.setdefault("host", unquote(parts.hostname))
    if port is not None:
        params.setdefault("port", port)
    if parts.username:
        params.setdefault("user", unquote(parts.username))
    if parts.password:
        params.setdefault("password", unquote(parts.password))
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "pydynflow")
    if _PEEWEE_MAJOR < 4:  # peewee 4 always runs in autocommit mode and dropped the option
        params["autorollback"] = True
    return PydynflowPostgresqlDatabase(dbname, **params)
