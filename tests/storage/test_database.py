"""`open_database`: the accepted URLs and the connection settings they get."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import peewee
import pytest

from pydynflow import PersistenceError, World
from pydynflow.storage import Storage, open_database
from pydynflow.storage.database import close_database


def _pragma(database: peewee.Database, name: str) -> object:
    return database.execute_sql(f"PRAGMA {name}").fetchone()[0]


def test_sqlite_file_settings(sqlite_url: str) -> None:
    database = open_database(sqlite_url)
    try:
        assert isinstance(database, peewee.SqliteDatabase)
        assert _pragma(database, "journal_mode") == "wal"
        assert _pragma(database, "synchronous") == 2  # FULL
        assert _pragma(database, "busy_timeout") == 5000
        assert _pragma(database, "foreign_keys") == 1
    finally:
        close_database(database)


def test_sqlite_url_options(sqlite_url: str) -> None:
    database = open_database(sqlite_url + "?synchronous=normal&busy_timeout=250")
    try:
        assert _pragma(database, "synchronous") == 1  # NORMAL
        assert _pragma(database, "busy_timeout") == 250
    finally:
        close_database(database)


def test_relative_and_absolute_sqlite_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_database("sqlite:///relative.db")
    absolute = open_database(f"sqlite:///{tmp_path / 'absolute.db'}")
    try:
        relative.execute_sql("CREATE TABLE t (x INTEGER)")
        absolute.execute_sql("CREATE TABLE t (x INTEGER)")
        assert (tmp_path / "relative.db").exists()
        assert (tmp_path / "absolute.db").exists()
    finally:
        close_database(relative)
        close_database(absolute)


def test_memory_database_is_one_database_for_all_threads(memory_url: str) -> None:
    database = open_database(memory_url)
    other = open_database(memory_url)
    try:
        assert _pragma(database, "foreign_keys") == 1
        database.execute_sql("CREATE TABLE t (x INTEGER)")
        database.execute_sql("INSERT INTO t VALUES (1)")
        seen: list[object] = []

        def read() -> None:
            seen.append(database.execute_sql("SELECT COUNT(*) FROM t").fetchone()[0])
            database.close()

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
        assert seen == [1]
        assert "t" not in other.get_tables()  # every open is a database of its own
    finally:
        close_database(database)
        close_database(other)


def test_memory_database_survives_closing_every_thread_connection(memory_url: str) -> None:
    database = open_database(memory_url)
    try:
        database.execute_sql("CREATE TABLE t (x INTEGER)")
        database.close()
        assert database.get_tables() == ["t"]
    finally:
        close_database(database)


@pytest.mark.postgres
def test_postgres_url_passes_libpq_parameters(postgres_url: str) -> None:
    database = open_database(postgres_url.replace("postgresql://", "postgres://", 1))
    try:
        assert isinstance(database, peewee.PostgresqlDatabase)
        schema = postgres_url.rsplit("%3D", 1)[1]
        assert database.execute_sql("SHOW search_path").fetchone()[0] == schema
        assert database.execute_sql("SHOW application_name").fetchone()[0] == "pydynflow"
    finally:
        close_database(database)


@pytest.mark.postgres
def test_postgres_connections_are_per_thread(postgres_url: str) -> None:
    database = open_database(postgres_url)
    try:
        pids: list[int] = []

        def backend() -> None:
            pids.append(database.execute_sql("SELECT pg_backend_pid()").fetchone()[0])

        backend()
        thread = threading.Thread(target=backend)
        thread.start()
        thread.join()
        assert len(set(pids)) == 2
    finally:
        close_database(database)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user@host/db",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///x.db?bogus=1",
        "sqlite:///x.db?synchronous=sometimes",
        "postgresql://host/",
        "postgresql://host:notaport/db",
        "just a path.db",
        "",
    ],
)
def test_unsupported_urls_raise_value_error_naming_url_and_schemes(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_database(url)
    assert repr(url) in str(caught.value)
    assert "postgresql://" in str(caught.value) and "sqlite:///" in str(caught.value)


def test_a_missing_postgres_driver_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # `import psycopg2` fails
    for open_it in (
        lambda: open_database("postgresql://app@db.example/app"),
        lambda: World("postgresql://app@db.example/app", executor=False),
    ):
        with pytest.raises(PersistenceError) as raised:
            open_it()
        assert "pip install 'pydynflow[postgres]'" in str(raised.value)
        assert "migrate" not in str(raised.value)


def test_a_sqlite_file_that_cannot_be_opened_is_a_connection_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'app.db'}"
    with pytest.raises(PersistenceError) as raised:
        Storage(url)
    assert str(raised.value).startswith(f"could not connect to {url}: ")
    assert "migrate" not in str(raised.value)


def test_open_database_without_create_wants_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(PersistenceError, match=re.escape(str(missing))):
        open_database(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    close_database(open_database("sqlite:///:memory:", create=False))  # nothing to find
