"""``pydynflow db``: the database schema's version, its pending migrations, migrating it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click
import peewee

from pydynflow.cli._common import common_options
from pydynflow.cli._output import echo_json, table
from pydynflow.errors import PersistenceError
from pydynflow.storage.database import close_database, open_database, redact_url
from pydynflow.storage.migrations import LATEST_VERSION, MIGRATIONS, current_version, migrate
from pydynflow.storage.sql import DRIVER_ERRORS

__all__ = ["db"]


@contextlib.contextmanager
def _database(url: str, *, create: bool) -> Iterator[peewee.Database]:
    """Open the database at ``url``; driver errors become `PersistenceError`."""
    try:
        database = open_database(url, create=create)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--db'") from exc
    try:
        yield database
    except DRIVER_ERRORS as exc:
        raise PersistenceError(
            f"cannot read the schema of {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        close_database(database)


def _migrations(after: int, upto: int) -> list[dict[str, Any]]:
    """Return the migrations numbered ``after + 1 .. upto``."""
    return [
        {"version": number, "description": description}
        for number, description, _ in MIGRATIONS
        if after < number <= upto
    ]


@click.group()
def db() -> None:
    """Inspect and migrate the database schema."""


@db.command()
@common_options
def status(db_url: str, as_json: bool) -> None:
    """Show the schema version and the migrations the database lacks.

    Opens only an existing database and changes nothing; pending migrations are reported,
    not an error (``pydynflow db migrate`` applies them).
    """
    with _database(db_url, create=False) as database:
        version = current_version(database)
    pending = _migrations(version, LATEST_VERSION)
    if as_json:
        echo_json(
            {
                "database": redact_url(db_url),
                "version": version,
                "latest": LATEST_VERSION,
                "pending": pending,
                "up_to_date": version == LATEST_VERSION,
            }
        )
        return
    if version > LATEST_VERSION:
        summary = f"newer than this pydynflow knows ({LATEST_VERSION}): upgrade pydynflow"
    elif pending:
        summary = f"{len(pending)} pending: run `pydynflow db migrate`"
    else:
        summary = "up to date"
    click.echo(
        table(
            ("database", redact_url(db_url)),
            [("version", version), ("latest", LATEST_VERSION), ("migrations", summary)],
        )
    )
    if pending:
        rows = [(item["version"], item["description"]) for item in pending]
        click.echo("\n" + table(("MIGRATION", "DESCRIPTION"), rows))


@db.command("migrate")
@common_options
def migrate_command(db_url: str, as_json: bool) -> None:
    """Apply the migrations the database lacks (creating a SQLite file that does not exist).

    Several processes may run it at once: each migration runs once, in a transaction of
    its own with its version bump.
    """
    with _database(db_url, create=True) as database:
        before = current_version(database)
        after = migrate(database, name=redact_url(db_url))
    applied = _migrations(before, after)
    if as_json:
        echo_json(
            {
                "database": redact_url(db_url),
                "from_version": before,
                "version": after,
                "applied": applied,
            }
        )
        return
    if not applied:
        click.echo(f"{redact_url(db_url)}: already at schema version {after}")
        return
    click.echo(f"{redact_url(db_url)}: schema version {before} -> {after}")
    click.echo(table(("MIGRATION", "DESCRIPTION"), [tuple(item.values()) for item in applied]))
