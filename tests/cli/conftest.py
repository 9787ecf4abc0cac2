"""Fixtures of the command-line tests: the CLI as a real process, a database with plans.

An executor world runs in the test process; each ``pydynflow`` command runs in a process of
its own, forked by `tests.cli.fork_server` (which imported the command line once), and its
client world reaches that executor through the database. `test_cli` also runs the console
script itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
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


class ForkServer:
    """`tests.cli.fork_server`, started on first use: runs each command in a fork of itself."""

    def __init__(self, io_dir: Path) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.io_dir = io_dir  # the commands' stdin, stdout and stderr files

    def run(
        self, args: list[str], env: dict[str, str], cwd: Path, stdin: str | None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pydynflow ARGS...``; return what `subprocess.run` would."""
        out, err, given = (self.io_dir / name for name in ("out", "err", "in"))
        if stdin is not None:
            given.write_text(stdin, encoding="utf-8")
        request = {
            "args": args,
            "env": env,
            "cwd": str(cwd),
            "stdin": str(given) if stdin is not None else None,
            "out": str(out),
            "err": str(err),
        }
        proc = self._started()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        if not ready:
            self.close()  # the command hangs: the server and its fork go
            raise subprocess.TimeoutExpired(["pydynflow", *args], TIMEOUT)
        reply = json.loads(proc.stdout.readline())
        done = subprocess.CompletedProcess(
            ["pydynflow", *args],
            reply["status"],
            out.read_text(encoding="utf-8"),
            err.read_text(encoding="utf-8"),
        )
        for path in (out, err, given):
            path.unlink(missing_ok=True)
        return done

    def _started(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.cli.fork_server"],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,  # closing it kills a hung fork too
            )
        return self.proc

    def close(self) -> None:
        """Stop the server (and a fork still running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """One `ForkServer` per test process."""
    server = ForkServer(tmp_path_factory.mktemp("cli-io"))
    yield server
    server.close()


@pytest.fixture
def cli(tmp_path: Path, fork_server: ForkServer) -> Cli:
    """Return a function running ``pydynflow ARGS...`` in a process of its own (in
    ``tmp_path``), with this process's environment and ``env``."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if env is None or "PYDYNFLOW_DB" not in env:
            environment.pop("PYDYNFLOW_DB", None)
        return fork_server.run(list(args), environment, tmp_path, stdin)

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
