"""Database fixtures shared by the test suite: SQLite file, SQLite in memory, PostgreSQL.

PostgreSQL: ``PYDYNFLOW_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
names the server. If it cannot be reached the PostgreSQL tests are skipped, unless
``PYDYNFLOW_REQUIRE_POSTGRES=1``, which makes them fail instead. Each test gets a fresh schema
``t_<hex>`` (selected through the URL's ``options=-csearch_path=...``), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.partition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """Return the URL of a fresh SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'pydynflow.db'}"


@pytest.fixture
def memory_url() -> str:
    """Return the URL of an in-memory SQLite database (each open is a new database)."""
    return "sqlite:///:memory:"


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[tuple[str, Any]]:
    url = os.environ.get("PYDYNFLOW_TEST_POSTGRES") or POSTGRES_DEFAULT_URL
    try:
        import psycopg2

        conn = psycopg2.connect(url, connect_timeout=5)
    except Exception as exc:
        message = (
            f"PostgreSQL not reachable at {_redact(url)}: {str(exc).strip()}; "
            "set PYDYNFLOW_TEST_POSTGRES"
        )
        if os.environ.get("PYDYNFLOW_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SET lock_timeout = '30s'")
    yield url, conn
    conn.close()


@pytest.fixture
def postgres_url(_postgres_admin: tuple[str, Any]) -> Iterator[str]:
    """Return a PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    url, conn = _postgres_admin
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(
    params=[
        "sqlite_file",
        "sqlite_memory",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """Return a database URL, once per backend: SQLite file, SQLite memory, PostgreSQL."""
    fixture = {
        "sqlite_file": "sqlite_url",
        "sqlite_memory": "memory_url",
        "postgres": "postgres_url",
    }[request.param]
    return str(request.getfixturevalue(fixture))
