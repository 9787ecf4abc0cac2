"""Numbered schema migrations, recorded in ``dynflow_schema_info(version)``.

`migrate` applies the migrations a database lacks, in order, each in one transaction with
its version bump; concurrent migrators are serialised (a PostgreSQL advisory lock, SQLite's
write lock) and re-read the version, so each migration runs once. A database newer than
this code is refused (an older pydynflow must not write to a newer schema).

Adding a migration: change `pydynflow.storage.models` (they describe the latest schema),
then append ``(N, "what it does", _migration_N)`` to `MIGRATIONS` with the DDL that turns
schema N-1 into N on SQLite and PostgreSQL: plain SQL, never the live models (they change
again), no "if missing" checks (a database at N-1 has exactly schema N-1); it runs inside
the migration transaction. Never edit or renumber a released migration.
``tests/storage/test_migrations.py`` checks that every upgrade path ends at the models'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peewee

from pydynflow.errors import PersistenceError
from pydynflow.storage.database import is_postgres, is_sqlite

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "MIGRATION_6_DROPPED",
    "MIGRATION_6_INDEXES",
    "MIGRATION_LOCK_KEY",
    "current_version",
    "migrate",
]

SCHEMA_INFO_TABLE = "dynflow_schema_info"
MIGRATION_LOCK_KEY = 0x7079_6466_6C6F_7701 & 0x7FFF_FFFF_FFFF_FFFF
"""The PostgreSQL advisory lock key held by a migrating transaction ("pydflow" + 1)."""

Migration = Callable[[peewee.Database], None]


# Schema 1, frozen: the DDL that peewee generated from the models of commit 2ac938f, as the
# released migration 1 ran it; tables in dependency order, then the indexes.
_SCHEMA_1_SQLITE_TABLES = (
    'CREATE TABLE "dynflow_execution_plans" ("uuid" VARCHAR(36) NOT NULL PRIMARY KEY, '
    '"state" VARCHAR(32) NOT NULL, "result" VARCHAR(32), "label" TEXT, "root_plan_step_id" INTEGER, '
    '"started_at" DATETIME, "ended_at" DATETIME, "real_time" REAL, "execution_time" REAL, '
    '"run_flow" BLOB, "finalize_flow" BLOB, "execution_history" BLOB)',
    'CREATE TABLE "dynflow_actions" ("execution_plan_uuid" VARCHAR(36) NOT NULL, '
    '"id" INTEGER NOT NULL, "class" TEXT NOT NULL, "caller_execution_plan_id" VARCHAR(36), '
    '"caller_action_id" INTEGER, "plan_step_id" INTEGER, "run_step_id" INTEGER, '
    '"finalize_step_id" INTEGER, "input" BLOB, "output" BLOB, '
    'PRIMARY KEY ("execution_plan_uuid", "id"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_steps" ("execution_plan_uuid" VARCHAR(36) NOT NULL, '
    '"id" INTEGER NOT NULL, "action_id" INTEGER NOT NULL, "state" VARCHAR(32) NOT NULL, '
    '"phase" VARCHAR(16) NOT NULL, "started_at" DATETIME, "ended_at" DATETIME, '
    '"real_time" REAL, "execution_time" REAL, "progress_done" REAL, "progress_weight" REAL, '
    '"attempts" INTEGER NOT NULL, "queue" TEXT, "action_class" TEXT, "error" BLOB, '
    '"children" BLOB, PRIMARY KEY ("execution_plan_uuid", "id"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_delayed_plans" ("execution_plan_uuid" VARCHAR(36) NOT NULL PRIMARY KEY, '
    '"start_at" DATETIME, "start_before" DATETIME, "frozen" INTEGER NOT NULL, '
    '"serialized_args" BLOB, '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_execution_plan_dependencies" ('
    '"execution_plan_uuid" VARCHAR(36) NOT NULL, "blocked_by_uuid" VARCHAR(36) NOT NULL, '
    'PRIMARY KEY ("execution_plan_uuid", "blocked_by_uuid"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE, "
    'FOREIGN KEY ("blocked_by_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_envelopes" ("id" INTEGER NOT NULL PRIMARY KEY, '
    '"receiver_id" VARCHAR(255) NOT NULL, "data" BLOB NOT NULL)',
    'CREATE TABLE "dynflow_coordinator_records" ("id" VARCHAR(255) NOT NULL, '
    '"class" VARCHAR(255) NOT NULL, "owner_id" VARCHAR(255), "data" BLOB, '
    'PRIMARY KEY ("id", "class"))',
    'CREATE TABLE "dynflow_output_chunks" ("id" INTEGER NOT NULL PRIMARY KEY, '
    '"execution_plan_uuid" VARCHAR(36) NOT NULL, "action_id" INTEGER NOT NULL, '
    '"chunk" BLOB NOT NULL, "kind" VARCHAR(255), "timestamp" DATETIME NOT NULL, '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
)
_SCHEMA_1_POSTGRES_TABLES = (
    'CREATE TABLE "dynflow_execution_plans" ("uuid" VARCHAR(36) NOT NULL PRIMARY KEY, '
    '"state" VARCHAR(32) NOT NULL, "result" VARCHAR(32), "label" TEXT, "root_plan_step_id" INTEGER, '
    '"started_at" TIMESTAMP, "ended_at" TIMESTAMP, "real_time" DOUBLE PRECISION, '
    '"execution_time" DOUBLE PRECISION, "run_flow" BYTEA, "finalize_flow" BYTEA, '
    '"execution_history" BYTEA)',
    'CREATE TABLE "dynflow_actions" ("execution_plan_uuid" VARCHAR(36) NOT NULL, '
    '"id" INTEGER NOT NULL, "class" TEXT NOT NULL, "caller_execution_plan_id" VARCHAR(36), '
    '"caller_action_id" INTEGER, "plan_step_id" INTEGER, "run_step_id" INTEGER, '
    '"finalize_step_id" INTEGER, "input" BYTEA, "output" BYTEA, '
    'PRIMARY KEY ("execution_plan_uuid", "id"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_steps" ("execution_plan_uuid" VARCHAR(36) NOT NULL, '
    '"id" INTEGER NOT NULL, "action_id" INTEGER NOT NULL, "state" VARCHAR(32) NOT NULL, '
    '"phase" VARCHAR(16) NOT NULL, "started_at" TIMESTAMP, "ended_at" TIMESTAMP, '
    '"real_time" DOUBLE PRECISION, "execution_time" DOUBLE PRECISION, '
    '"progress_done" DOUBLE PRECISION, "progress_weight" DOUBLE PRECISION, '
    '"attempts" INTEGER NOT NULL, "queue" TEXT, "action_class" TEXT, "error" BYTEA, '
    '"children" BYTEA, PRIMARY KEY ("execution_plan_uuid", "id"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_delayed_plans" ("execution_plan_uuid" VARCHAR(36) NOT NULL PRIMARY KEY, '
    '"start_at" TIMESTAMP, "start_before" TIMESTAMP, "frozen" BOOLEAN NOT NULL, '
    '"serialized_args" BYTEA, '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_execution_plan_dependencies" ('
    '"execution_plan_uuid" VARCHAR(36) NOT NULL, "blocked_by_uuid" VARCHAR(36) NOT NULL, '
    'PRIMARY KEY ("execution_plan_uuid", "blocked_by_uuid"), '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE, "
    'FOREIGN KEY ("blocked_by_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
    'CREATE TABLE "dynflow_envelopes" ("id" BIGSERIAL NOT NULL PRIMARY KEY, '
    '"receiver_id" VARCHAR(255) NOT NULL, "data" BYTEA NOT NULL)',
    'CREATE TABLE "dynflow_coordinator_records" ("id" VARCHAR(255) NOT NULL, '
    '"class" VARCHAR(255) NOT NULL, "owner_id" VARCHAR(255), "data" BYTEA, '
    'PRIMARY KEY ("id", "class"))',
    'CREATE TABLE "dynflow_output_chunks" ("id" BIGSERIAL NOT NULL PRIMARY KEY, '
    '"execution_plan_uuid" VARCHAR(36) NOT NULL, "action_id" INTEGER NOT NULL, '
    '"chunk" BYTEA NOT NULL, "kind" VARCHAR(255), "timestamp" TIMESTAMP NOT NULL, '
    'FOREIGN KEY ("execution_plan_uuid") REFERENCES "dynflow_execution_plans" ("uuid") '
    "ON DELETE CASCADE)",
)
_SCHEMA_1_INDEXES = (
    'CREATE INDEX "dynflow_execution_plans_state" ON "dynflow_execution_plans" ("state")',
    'CREATE INDEX "dynflow_execution_plans_result" ON "dynflow_execution_plans" ("result")',
    'CREATE INDEX "dynflow_execution_plans_label" ON "dynflow_execution_plans" ("label")',
    'CREATE INDEX "dynflow_execution_plans_started_at" ON "dynflow_execution_plans" ("started_at")',
    'CREATE INDEX "dynflow_execution_plans_ended_at" ON "dynflow_execution_plans" ("ended_at")',
    'CREATE INDEX "dynflow_actions_caller_execution_plan_id_caller_action_id" '
    'ON "dynflow_actions" ("caller_execution_plan_id", "caller_action_id")',
    'CREATE INDEX "dynflow_steps_state" ON "dynflow_steps" ("state")',
    'CREATE INDEX "dynflow_delayed_plans_start_at" ON "dynflow_delayed_plans" ("start_at")',
    'CREATE INDEX "dynflow_execution_plan_dependencies_execution_plan_uuid" '
    'ON "dynflow_execution_plan_dependencies" ("execution_plan_uuid")',
    'CREATE INDEX "dynflow_execution_plan_dependencies_blocked_by_uuid" '
    'ON "dynflow_execution_plan_dependencies" ("blocked_by_uuid")',
    'CREATE INDEX "dynflow_envelopes_receiver_id" ON "dynflow_envelopes" ("receiver_id")',
    'CREATE INDEX "dynflow_coordinator_records_owner_id" '
    'ON "dynflow_coordinator_records" ("owner_id")',
    'CREATE INDEX "dynflow_output_chunks_execution_plan_uuid_action_id" '
    'ON "dynflow_output_chunks" ("execution_plan_uuid", "action_id")',
)


def _migration_1(database: peewee.Database) -> None:
    """Create the version-1 schema."""
    tables = _SCHEMA_1_POSTGRES_TABLES if is_postgres(database) else _SCHEMA_1_SQLITE_TABLES
    for statement in (*tables, *_SCHEMA_1_INDEXES):
        database.execute_sql(statement)


def _migration_2(database: peewee.Database) -> None:
    """Add ``dynflow_execution_plans.plan_steps`` (the plan-phase steps as one blob)."""
    blob = "BYTEA" if is_postgres(database) else "BLOB"
    database.execute_sql(f'ALTER TABLE "dynflow_execution_plans" ADD COLUMN "plan_steps" {blob}')


def _migration_3(database: peewee.Database) -> None:
    """Drop the index on ``dynflow_steps.state``.

    No query reads steps by state (steps are always read by plan, through the primary key),
    while every step transition rewrote two of its entries.
    """
    database.execute_sql('DROP INDEX "dynflow_steps_state"')


def _migration_4(database: peewee.Database) -> None:
    """Add ``dynflow_steps.retries``: the `Retry` attempts a step used since it last started
    fresh, so that a restarted world knows how many are left."""
    # NOT NULL as the model declares it; the DEFAULT fills the rows already there (SQLite
    # cannot add a NOT NULL column without one).
    database.execute_sql(
        'ALTER TABLE "dynflow_steps" ADD COLUMN "retries" INTEGER NOT NULL DEFAULT 0'
    )


def _migration_5(database: peewee.Database) -> None:
    """Add ``dynflow_worlds``: the worlds sharing the database and their heartbeats."""
    postgres = is_postgres(database)
    boolean = "BOOLEAN" if postgres else "INTEGER"
    timestamp = "TIMESTAMP" if postgres else "DATETIME"
    real = "DOUBLE PRECISION" if postgres else "REAL"
    database.execute_sql(
        'CREATE TABLE "dynflow_worlds" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, '
        f'"name" TEXT NOT NULL, "executor" {boolean} NOT NULL, "queues" TEXT NOT NULL, '
        '"pid" INTEGER NOT NULL, "hostname" TEXT NOT NULL, '
        f'"started_at" {timestamp} NOT NULL, "last_seen" {timestamp} NOT NULL, '
        f'"validity_timeout" {real} NOT NULL)'
    )


MIGRATION_6_DROPPED = (
    "dynflow_execution_plans_state",
    "dynflow_execution_plans_result",
    "dynflow_execution_plans_started_at",
    "dynflow_execution_plans_ended_at",
)
"""The plan indexes migration 6 replaces: each is the first column of one of its own."""
MIGRATION_6_INDEXES = (
    (
        "dynflow_execution_plans_state_started_at_uuid",
        'CREATE INDEX "dynflow_execution_plans_state_started_at_uuid" '
        'ON "dynflow_execution_plans" ("state", "started_at", "uuid")',
    ),
    (
        "dynflow_execution_plans_result_started_at_uuid",
        'CREATE INDEX "dynflow_execution_plans_result_started_at_uuid" '
        'ON "dynflow_execution_plans" ("result", "started_at", "uuid")',
    ),
    (
        "dynflow_execution_plans_started_at_uuid",
        'CREATE INDEX "dynflow_execution_plans_started_at_uuid" '
        'ON "dynflow_execution_plans" ("started_at", "uuid")',
    ),
    (
        "dynflow_execution_plans_ended_at_uuid",
        'CREATE INDEX "dynflow_execution_plans_ended_at_uuid" '
        'ON "dynflow_execution_plans" ("ended_at", "uuid")',
    ),
    (
        "dynflow_actions_root_class",
        'CREATE INDEX "dynflow_actions_root_class" '
        'ON "dynflow_actions" ("class", "execution_plan_uuid") WHERE ("id" = 1)',
    ),
)
"""``(name, DDL)`` of the indexes migration 6 creates."""


def _migration_6(database: peewee.Database) -> None:
    """Index the console's plan list: each filter column with the default order after it
    (``started_at``, then ``uuid`` to break ties), and the root actions' classes with their
    plans (so that filtering by class reads that index alone).

    A page of plans filtered by state (or result) and ordered by start time is then a walk
    along one index, however many plans are stored; the single-column indexes these lead
    with are dropped (each plan transition would otherwise update both).
    """
    for name in MIGRATION_6_DROPPED:
        database.execute_sql(f'DROP INDEX "{name}"')
    for _, statement in MIGRATION_6_INDEXES:
        database.execute_sql(statement)


POSTGRES_ONLY_INDEXES = {"dynflow_envelopes": "dynflow_envelopes_receiver_id_prefix"}
"""Indexes a migration creates on PostgreSQL only (the models, shared by both databases,
do not declare them): table -> index name."""


def _migration_7(database: peewee.Database) -> None:
    """PostgreSQL: index ``dynflow_envelopes.receiver_id`` for prefix matches.

    A plan's events are read with ``receiver_id LIKE '<plan id>:%'``, which the plain index
    serves only under the ``C`` collation; under any other (``C.UTF-8``, ``en_US``) each read
    scanned every stored event. A ``varchar_pattern_ops`` index serves it in any collation.
    SQLite reads them as a range of the plain index: nothing to do there.
    """
    if is_postgres(database):
        name = POSTGRES_ONLY_INDEXES["dynflow_envelopes"]
        database.execute_sql(
            f'CREATE INDEX "{name}" ON "dynflow_envelopes" ("receiver_id" varchar_pattern_ops)'
        )


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "create the dynflow_* tables", _migration_1),
    (2, "plan-phase steps in one column of the plan row", _migration_2),
    (3, "no index on step states", _migration_3),
    (4, "Retry attempts per step", _migration_4),
    (5, "the worlds sharing a database", _migration_5),
    (6, "indexes for the console's plan list", _migration_6),
    (7, "PostgreSQL: events found by their plan in any collation", _migration_7),
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
