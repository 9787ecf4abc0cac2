"""``pydynflow db status`` and ``db migrate`` as processes, on SQLite files and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pydynflow import World
from pydynflow.storage.migrations import LATEST_VERSION, MIGRATIONS
from tests.cli.conftest import Cli

RELEASE_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema3-plans.db"


def _json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _pending(after: int) -> list[dict[str, object]]:
    return [
        {"version": number, "description": description}
        for number, description, _ in MIGRATIONS
        if number > after
    ]


def test_status_of_a_missing_sqlite_file_fails_and_creates_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "data" / "pydynflow.db"
    done = cli("db", "status", "--db", f"sqlite:///{missing}")
    assert done.returncode == 1 and done.stdout == ""
    assert f"Error: no database at {missing}" in done.stderr
    assert not missing.parent.exists()


def test_migrate_creates_a_fresh_sqlite_file_then_status_is_up_to_date(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "fresh.db"
    url = f"sqlite:///{path}"
    done = cli("db", "migrate", "--db", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{url}: schema version 0 -> {LATEST_VERSION}"
    assert lines[1].split() == ["MIGRATION", "DESCRIPTION"]
    assert [line.split(maxsplit=1) for line in lines[2:]] == [
        [str(number), description] for number, description, _ in MIGRATIONS
    ]
    assert path.is_file()

    status = _json(cli("db", "status", "--db", url, "--json"))
    assert status == {
        "database": url,
        "version": LATEST_VERSION,
        "latest": LATEST_VERSION,
        "pending": [],
        "up_to_date": True,
    }
    done = cli("db", "status", "--db", url)
    assert done.returncode == 0 and "up to date" in done.stdout

    again = cli("db", "migrate", "--db", url)
    assert again.stdout == f"{url}: already at schema version {LATEST_VERSION}\n"
    with World(url, executor=False) as client:  # a client world opens what it made
        assert client.plans() == []


def test_status_of_an_empty_file_lists_every_migration_as_pending(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    url = f"sqlite:///{path}"
    assert _json(cli("db", "status", "--db", url, "--json"))["pending"] == _pending(0)
    done = cli("db", "status", "--db", url)  # the first one migrated nothing
    assert done.returncode == 0, done.stderr
    assert f"{len(MIGRATIONS)} pending: run `pydynflow db migrate`" in done.stdout


def test_a_database_of_the_previous_release_shows_and_applies_what_it_lacks(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    shutil.copy(RELEASE_FIXTURE, path)
    url = f"sqlite:///{path}"
    status = _json(cli("db", "status", "--db", url, "--json"))
    assert (status["version"], status["pending"]) == (3, _pending(3))
    migrated = _json(cli("db", "migrate", "--db", url, "--json"))
    assert migrated == {
        "database": url,
        "from_version": 3,
        "version": LATEST_VERSION,
        "applied": _pending(3),
    }


@pytest.mark.postgres
def test_status_and_migrate_on_postgres(cli: Cli, postgres_url: str) -> None:
    status = _json(cli("db", "status", "--db", postgres_url, "--json"))
    assert (status["version"], status["pending"]) == (0, _pending(0))
    migrated = _json(cli("db", "migrate", "--db", postgres_url, "--json"))
    assert (migrated["from_version"], migrated["version"]) == (0, LATEST_VERSION)
    assert _json(cli("db", "status", "--db", postgres_url, "--json"))["up_to_date"] is True


def test_an_unreachable_postgres_server_fails_with_the_reason(cli: Cli) -> None:
    url = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=2"
    for command in ("status", "migrate"):
        done = cli("db", command, "--db", url)
        assert done.returncode == 1, done.stderr
        assert "127.0.0.1" in done.stderr and "Traceback" not in done.stderr
