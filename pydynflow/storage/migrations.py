"""Numbered schema migrations, recorded in ``dynflow_schema_info(version)``.

`migrate` applies the migrations a database lacks, in order, each in its own transaction
together with the version bump, and returns the resulting version. Running it again is a
no-op. Concurrent migrators (several worlds starting at once) are serialised: on PostgreSQL
each transaction first takes ``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``; on SQLite it
starts with ``BEGIN IMMEDIATE`` (the write lock). Whoever waits re-reads the version after
getting the lock, so every migration runs exactly once. A database whose version is newer
than this code knows is refused with `PersistenceError` (an older pydynflow must not write
to a newer schema).

Adding a migration
------------------
1. Change `pydynflow.storage.models` (the models always describe the *latest* schema).
2. Append ``(N, "what it does", _migration_N)`` to `MIGRATIONS`, where N is the last number
   plus one, and write ``_migration_N(database)`` with the DDL that turns schema N-1 into N,
   for both SQLite and PostgreSQL (``is_postgres(database)`` tells them apart). Prefer plain
   SQL or ``playhouse.migrate.SchemaMigrator.from_database(database)``; do not use the live
   models there, since they will change again later. The function runs inside the migration
   transaction: do not commit.
3. Never edit or renumber a migration that has been released.

Migration 1 builds the tables from the live models, so a fresh database gets the latest
tables at once; every later migration must therefore be idempotent (migration 2 adds its
column only where it is missing), so that a fresh database and an upgraded one end
identical. The day a migration cannot be written that way (it changes or drops a column),
migration 1 must first be frozen: rewritten to create exactly the version-1 schema (copy
the version-1 model classes into this module, or paste the DDL). ``tests/storage/test_migrations.py``
checks that a migrated database has exactly the columns the models declare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peewee

from pydynflow.errors import PersistenceError
from pydynflow.storage.database import is_postgres, is_sqlite
from pydynflow.storage.models import ALL_MODELS

__all__ = ["LATEST_VERSION", "MIGRATIONS", "MIGRATION_LOCK_KEY", "current_version", "migrate"]

SCHEMA_INFO_TABLE = "dynflow_schema_info"
MIGRATION_LOCK_KEY = 0x7079_6466_6C6F_7701 & 0x7FFF_FFFF_FFFF_FFFF
"""The PostgreSQL advisory lock key held by a migrating transaction ("pydflow" + 1)."""

Migration = Callable[[peewee.Database], None]


def _migration_1(database: peewee.Database) -> None:
    """Create the whole schema (see the module docstring: freeze this once models change)."""
    for model in ALL_MODELS:
        peewee.SchemaManager(model, database).create_all(safe=False)


def _migration_2(database: peewee.Database) -> None:
    """Add ``dynflow_execution_plans.plan_steps`` (the plan-phase steps as one blob).

    Migration 1 still builds its tables from the live models, so on a fresh database the
    column is already there: add it only where it is missing (the end state is the same).
    """
    table = "dynflow_execution_plans"
    if is_postgres(database):
        cursor = database.execute_sql(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name = 'plan_steps'",
            (table,),
        )
        if cursor.fetchone() is None:
            database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "plan_steps" BYTEA')
        return
    columns = {row[1] for row in database.execute_sql(f'PRAGMA table_info("{table}")')}
    if "plan_steps" not in columns:
        database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "plan_steps" BLOB')


def _migration_3(database: peewee.Database) -> None:
    """Drop the index on ``dynflow_steps.state``.

    No query reads steps by state (steps are always read by plan, through the primary key),
    while every step transition rewrote two of its entries: one in ten seconds a writer
    spent in W1 went to it. ``IF EXISTS``: migration 1 no longer creates it.
    """
    database.execute_sql('DROP INDEX IF EXISTS "dynflow_steps_state"')


def _migration_4(database: peewee.Database) -> None:
    """Add ``dynflow_steps.retries``: the `Retry` attempts a step used since it last started
    fresh, so that a restarted world knows how many are left (where it is missing)."""
    _add_column(database, "dynflow_steps", "retries", "INTEGER DEFAULT 0")


def _add_column(database: peewee.Database, table: str, column: str, definition: str) -> None:
    """Add ``column`` to ``table`` unless it is there (a fresh database has it already)."""
    if is_postgres(database):
        cursor = database.execute_sql(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name = %s",
            (table, column),
        )
        if cursor.fetchone() is None:
            database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {definition}')
        return
    columns = {row[1] for row in database.execute_sql(f'PRAGMA table_info("{table}")')}
    if column not in columns:
        database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {definition}')


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "create the dynflow_* tables", _migration_1),
    (2, "plan-phase steps in one column of the plan row", _migration_2),
    (3, "no index on step states", _migration_3),
    (4, "Retry attempts per step", _migration_4),
]
"""Every migration, in order: ``(number, description, function(database))``."""

LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(database: peewee.Database, *, name: str | None = None) -> int:
    """Bring ``database`` to `LATEST_VERSION` and return the version it ends at.

    ``name`` names the database in errors (a URL without its password).

    Raises:
        PersistenceError: if the database cannot be reached ("could not connect to ..."),
            or cannot be migrated (a migration failed, or the schema is newer than this
            code).
    """
    _check_numbering()
    try:
        database.connect(reuse_if_open=True)
    except (peewee.PeeweeException, OSError) as exc:
        where = name or f"the database {database.database!r}"
        raise PersistenceError(f"could not connect to {where}: {exc}") from exc
    try:
        with _locked_transaction(database):
            version = _read_version(database)
        _check_not_newer(version)
        for number, name, function in MIGRATIONS:
            if number <= version:
                continue
            with _locked_transaction(database):
                version = _read_version(database)  # another migrator may have been first
                _check_not_newer(version)
                if number <= version:
                    continue
                try:
                    function(database)
                except Exception as exc:
                    raise PersistenceError(
                        f"schema migration {number} ({name}) failed: {exc}"
                    ) from exc
                database.execute_sql(
                    f"UPDATE {SCHEMA_INFO_TABLE} SET version = {database.param}", (number,)
                )
                version = number
        return version
    except PersistenceError:
        raise
    except (peewee.PeeweeException, OSError) as exc:
        raise PersistenceError(f"cannot migrate the database schema: {exc}") from exc


def current_version(database: peewee.Database) -> int:
    """Return the schema version of ``database`` (0 if it was never migrated)."""
    tables = database.get_tables()
    if SCHEMA_INFO_TABLE not in tables:
        return 0
    row = database.execute_sql(f"SELECT version FROM {SCHEMA_INFO_TABLE}").fetchone()
    return int(row[0]) if row else 0


def _check_numbering() -> None:
    numbers = [number for number, _, _ in MIGRATIONS]
    if numbers != list(range(1, len(numbers) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n without gaps: {numbers}")


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise PersistenceError(
            f"the database schema is at version {version}, newer than this pydynflow "
            f"knows ({LATEST_VERSION}); upgrade pydynflow"
        )


@contextmanager
def _locked_transaction(database: peewee.Database) -> Iterator[None]:
    if is_sqlite(database):
        with database.atomic(lock_type="IMMEDIATE"):
            _ensure_schema_info(database)
            yield
    else:
        with database.atomic():
            if is_postgres(database):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            _ensure_schema_info(database)
            yield


def _ensure_schema_info(database: peewee.Database) -> None:
    database.execute_sql(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA_INFO_TABLE} (version INTEGER NOT NULL DEFAULT 0)"
    )
    row = database.execute_sql(f"SELECT COUNT(*) FROM {SCHEMA_INFO_TABLE}").fetchone()
    if not row or not row[0]:
        database.execute_sql(f"INSERT INTO {SCHEMA_INFO_TABLE} (version) VALUES (0)")


def _read_version(database: peewee.Database) -> int:
    row = database.execute_sql(f"SELECT MAX(version) FROM {SCHEMA_INFO_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0
