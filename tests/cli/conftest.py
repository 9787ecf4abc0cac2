"""Fixtures of the command-line tests: the CLI as a real process, a database with plans.

An executor world runs in the test process; the CLI runs as ``python -m pydynflow.cli`` in
a subprocess, and its client world reaches that executor through the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydynflow import ExecutionPlan, PlanState, Result, Triggered, World
from tests.cli.actions import SUSPENDED, Fails, Succeeds, Waits

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Return a function running ``pydynflow ARGS...`` in a subprocess (in ``tmp_path``)."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if env is None or "PYDYNFLOW_DB" not in env:
            environment.pop("PYDYNFLOW_DB", None)
        return subprocess.run(
            [sys.executable, "-m", "pydynflow.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=TIMEOUT,
        )

    return run


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """Return a database URL: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


SQLITE_ONLY = pytest.mark.parametrize("url", ["sqlite"], indirect=True)
"""For a test of the command line's own logic: the database adds nothing to it."""


@pytest.fixture
def executor(url: str) -> Iterator[World]:
    """Return an executor world running on ``url`` for the whole test."""
    with World(url, pool_size=2, stop_timeout=10) as world:
        yield world


def trigger_suspended(world: World, action: type[Waits]) -> Triggered:
    """Trigger ``action`` (a `Waits`) and return once its step is stored suspended."""
    key = str(uuid.uuid4())
    suspended = SUSPENDED[key] = threading.Event()
    triggered = world.trigger(action, {"key": key})
    assert suspended.wait(TIMEOUT), "the step did not suspend"
    return triggered


@dataclass
class Plans:
    """One plan in each state the tests read."""

    succeeded: ExecutionPlan
    failed: ExecutionPlan
    waiting: Triggered


@pytest.fixture
def plans(executor: World) -> Plans:
    """Return a plan stopped with success, one paused with an error, one suspended."""
    succeeded = executor.trigger(Succeeds).wait(TIMEOUT)
    failed = executor.trigger(Fails).wait(TIMEOUT)
    waiting = trigger_suspended(executor, Waits)
    assert (succeeded.state, succeeded.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert (failed.state, failed.result) == (PlanState.PAUSED, Result.ERROR)
    assert executor.load(waiting.id).state == PlanState.RUNNING
    return Plans(succeeded, failed, waiting)
