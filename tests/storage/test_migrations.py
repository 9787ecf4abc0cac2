"""Schema migrations: a fresh database gets every table, migrating again changes nothing, and
a database migrated from any earlier version ends with the schema the models declare."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from pydynflow.errors import PersistenceError
from pydynflow.states import Phase
from pydynflow.storage import Storage, migrate, migrations, open_database
from pydynflow.storage.database import close_database, is_postgres
from pydynflow.storage.migrations import LATEST_VERSION, MIGRATIONS, current_version
from pydynflow.storage.models import ALL_MODELS

from .schema import describe_schema, without_defaults
from .test_contract import make_plan

RELEASE_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema3-plans.db"

TABLES = {
    "dynflow_schema_info",
    "dynflow_execution_plans",
    "dynflow_actions",
    "dynflow_steps",
    "dynflow_delayed_plans",
    "dynflow_execution_plan_dependencies",
    "dynflow_envelopes",
    "dynflow_coordinator_records",
    "dynflow_output_chunks",
}


@pytest.fixture(params=["sqlite_file", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    fixture = {"sqlite_file": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def database(url: str) -> Iterator[peewee.Database]:
    database = open_database(url)
    try:
        yield database
    finally:
        close_database(database)


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [number for number, _, _ in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))


def test_fresh_database_gets_the_latest_version_and_every_table(database: peewee.Database) -> None:
    assert current_version(database) == 0
    assert migrate(database) == LATEST_VERSION
    assert current_version(database) == LATEST_VERSION
    assert set(database.get_tables()) >= TABLES


def test_migrated_columns_and_indexes_are_what_the_models_declare(
    database: peewee.Database,
) -> None:
    migrate(database)
    for model in ALL_MODELS:
        table = model._meta.table_name
        columns = {column.name for column in database.get_columns(table)}
        assert columns == {field.column_name for field in model._meta.sorted_fields}, table
    plan_indexes = {
        tuple(index.columns) for index in database.get_indexes("dynflow_execution_plans")
    }
    assert ("label",) in plan_indexes
    for column in ("state", "result"):  # schema 6: each with the list's default order
        assert (column, "started_at", "uuid") in plan_indexes
        assert (column,) not in plan_indexes
    for column in ("started_at", "ended_at"):
        assert (column, "uuid") in plan_indexes
    action_indexes = {tuple(index.columns) for index in database.get_indexes("dynflow_actions")}
    assert ("caller_execution_plan_id", "caller_action_id") in action_indexes
    step_indexes = {tuple(index.columns) for index in database.get_indexes("dynflow_steps")}
    assert ("state",) not in step_indexes  # migration 3
    foreign = {
        (key.table, key.dest_table)
        for model in ALL_MODELS
        for key in database.get_foreign_keys(model._meta.table_name)
    }
    for table in (
        "dynflow_actions",
        "dynflow_steps",
        "dynflow_delayed_plans",
        "dynflow_execution_plan_dependencies",
        "dynflow_output_chunks",
    ):
        assert (table, "dynflow_execution_plans") in foreign, table


def _drop_tables(database: peewee.Database) -> None:
    cascade = " CASCADE" if is_postgres(database) else ""
    for table in database.get_tables():
        database.execute_sql(f'DROP TABLE "{table}"{cascade}')


@pytest.mark.parametrize("version", range(1, LATEST_VERSION))
def test_a_database_at_any_version_migrates_to_the_schema_of_a_fresh_one(
    database: peewee.Database, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Version 1 is a database made by migration 1 alone, as its release made it."""
    migrate(database)
    fresh = describe_schema(database)
    _drop_tables(database)
    with monkeypatch.context() as patch:  # this code as it was at ``version``
        patch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:version])
        patch.setattr(migrations, "LATEST_VERSION", version)
        assert migrate(database) == version
    # Rows in the tables that later migrations change (a NOT NULL column needs a default).
    database.execute_sql(
        "INSERT INTO dynflow_execution_plans (uuid, state) VALUES ('old', 'stopped')"
    )
    database.execute_sql(
        "INSERT INTO dynflow_steps (execution_plan_uuid, id, action_id, state, phase, attempts) "
        "VALUES ('old', 1, 1, 'success', 'run', 0)"
    )

    assert migrate(database) == LATEST_VERSION
    assert describe_schema(database) == fresh
    assert database.execute_sql("SELECT retries FROM dynflow_steps").fetchall() == [(0,)]


def test_the_models_declare_the_migrated_schema(database: peewee.Database) -> None:
    """Defaults aside: a model's ``default=`` is applied by peewee, not by the table, while a
    NOT NULL column added to a table needs one there."""
    migrate(database)
    migrated = describe_schema(database)
    del migrated["dynflow_schema_info"]
    for table, index in migrations.POSTGRES_ONLY_INDEXES.items():  # the models are shared
        migrated[table]["indexes"].pop(index, None)
    _drop_tables(database)
    for model in ALL_MODELS:
        peewee.SchemaManager(model, database).create_all(safe=False)
    assert without_defaults(describe_schema(database)) == without_defaults(migrated)


def test_a_database_of_the_previous_release_migrates_to_the_schema_of_a_fresh_one(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Its tables were created from the models of its day (schema 3), not by migrations 1-3."""
    copy = tmp_path / "release.db"
    shutil.copy(RELEASE_FIXTURE, copy)
    released, fresh = open_database(f"sqlite:///{copy}"), open_database(sqlite_url)
    try:
        assert current_version(released) == 3
        assert migrate(released) == migrate(fresh) == LATEST_VERSION
        assert describe_schema(released) == describe_schema(fresh)
    finally:
        close_database(released)
        close_database(fresh)


def test_migrating_twice_is_a_no_op_and_keeps_data(url: str) -> None:
    with Storage(url) as storage:
        assert storage.migrate() == LATEST_VERSION
        storage.save_plan(make_plan("kept"))
        assert storage.migrate() == LATEST_VERSION
        assert migrate(storage.database) == LATEST_VERSION
        rows = storage.database.execute_sql("SELECT version FROM dynflow_schema_info").fetchall()
        assert rows == [(LATEST_VERSION,)]
    with Storage(url) as reopened:
        assert reopened.load_plan("kept") == make_plan("kept")


def test_concurrent_migrators_all_succeed(url: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        database = open_database(url)
        try:
            barrier.wait()
            results.append(migrate(database))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_database(database)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [LATEST_VERSION] * 4
    database = open_database(url)
    try:
        rows = database.execute_sql("SELECT version FROM dynflow_schema_info").fetchall()
        assert rows == [(LATEST_VERSION,)]
    finally:
        close_database(database)


def test_a_newer_schema_is_refused(database: peewee.Database) -> None:
    migrate(database)
    database.execute_sql("UPDATE dynflow_schema_info SET version = 999")
    with pytest.raises(PersistenceError, match="newer"):
        migrate(database)


def test_storage_can_skip_migrating(url: str) -> None:
    with Storage(url, migrate=False) as storage:
        assert current_version(storage.database) == 0
        assert storage.migrate() == LATEST_VERSION


def test_a_schema_1_database_is_upgraded_and_its_plans_still_load(url: str) -> None:
    """Schema 1 kept plan-phase steps as rows (migration 2 adds the plan_steps column),
    indexed step states (migration 3 drops that index) and had no step retries (migration 4
    adds the column)."""
    plan = make_plan("old")
    with Storage(url) as storage:
        storage.save_plan(plan)
        db = storage.database
        # Back to schema 1: plan-phase steps as rows, no plan_steps column.
        storage.save_steps(s for s in plan.steps.values() if s.phase == Phase.PLAN)
        db.execute_sql('ALTER TABLE "dynflow_execution_plans" DROP COLUMN "plan_steps"')
        db.execute_sql('CREATE INDEX "dynflow_steps_state" ON "dynflow_steps" ("state")')
        db.execute_sql('ALTER TABLE "dynflow_steps" DROP COLUMN "retries"')
        db.execute_sql('DROP TABLE "dynflow_worlds"')
        for name, _ in migrations.MIGRATION_6_INDEXES:
            db.execute_sql(f'DROP INDEX "{name}"')
        for name in migrations.MIGRATION_6_DROPPED:
            column = name.removeprefix("dynflow_execution_plans_")
            db.execute_sql(f'CREATE INDEX "{name}" ON "dynflow_execution_plans" ("{column}")')
        for name in migrations.POSTGRES_ONLY_INDEXES.values():  # migration 7
            db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        db.execute_sql("UPDATE dynflow_schema_info SET version = 1")
        assert current_version(db) == 1
    with Storage(url) as upgraded:
        assert current_version(upgraded.database) == LATEST_VERSION == 7
        indexes = {index.name for index in upgraded.database.get_indexes("dynflow_steps")}
        assert "dynflow_steps_state" not in indexes
        columns = {column.name for column in upgraded.database.get_columns("dynflow_steps")}
        assert "retries" in columns
        assert upgraded.database.table_exists("dynflow_worlds")
        loaded = upgraded.load_plan("old")
        assert loaded == plan and loaded.valid
        assert [step.id for step in loaded.steps.values()] == sorted(plan.steps)
        # Saved again, its plan-phase steps go to the new column; the old rows stay equal.
        upgraded.save_plan(loaded)
        assert upgraded.load_plan("old") == plan
