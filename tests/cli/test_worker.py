"""``pydynflow worker``: the daemon as a real process over real executor processes.

The daemon runs as ``python -m pydynflow.cli worker`` on a SQLite file or a PostgreSQL
schema; a client world in the test process triggers plans through the database. The tests
synchronise on the supervisor's JSON lines (stdout) and on the database, never on sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pydynflow import PlanState, Result, World
from pydynflow.cli import cli
from tests.cli.conftest import ROOT, SQLITE_ONLY
from tests.support.forked import SERVER
from tests.support.remote_actions import Quick
from tests.support.worker_app import Crashes, ReadsFifo, Retried

pytestmark = pytest.mark.slow

TIMEOUT = 60.0
VALIDITY_TIMEOUT = 30.0  # the workers' default: invalidation must come well before it


class Daemon:
    """``pydynflow worker`` in a process forked by `tests.support.fork_server` (as ``python -m
    pydynflow.cli worker`` would start it); a thread per pipe collects its lines."""

    def __init__(self, url: str, cwd: Path, *args: str, session: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDYNFLOW_LOG_LEVEL": "INFO"}
        env.pop("PYDYNFLOW_DB", None)
        self.process = SERVER.spawn(
            "pydynflow.cli",
            ["worker", "--db", url, "--name", "w", "--stop-timeout", "10", *args],
            None,  # stderr: a pipe
            env,
            cwd,
            session=session,  # a process group of its own, as in a terminal
        )
        self.lines: list[dict[str, Any]] = []  # the supervisor's, read so far
        self.stderr: list[str] = []
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._stdout.put)),
            threading.Thread(target=self._pump, args=(self.process.stderr, self._keep_stderr)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _pump(stream: Any, put: Callable[[Any], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def _keep_stderr(self, line: str | None) -> None:
        if line is not None:
            self.stderr.append(line)

    def wait_for(self, event: str, **fields: Any) -> dict[str, Any]:
        """Return the supervisor's next line for ``event`` whose ``fields`` match."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self._stdout.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {event!r} {fields} line; {self.report()}")
            data = json.loads(line)  # every line of the supervisor's is JSON
            self.lines.append(data)
            if data["event"] == event and all(data.get(k) == v for k, v in fields.items()):
                return data

    def worlds(self, count: int) -> dict[int, dict[str, Any]]:
        """Wait until ``count`` workers reported their worlds; return the lines by worker."""
        found: dict[int, dict[str, Any]] = {}
        while len(found) < count:
            line = self.wait_for("worker world")
            found[line["worker"]] = line
        return found

    def stop(self, *signals: int) -> int:
        """Send ``signals`` (default: one SIGTERM) and return the exit status."""
        for signum in signals or (signal.SIGTERM,):
            self.process.send_signal(signum)
        return self.finish()

    def finish(self) -> int:
        """Wait for the exit; return its status, with every stdout line read."""
        try:
            status = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the daemon did not exit; {self.report()}") from None
        for reader in self._readers:
            reader.join(TIMEOUT)
        while (line := self._stdout.get_nowait()) is not None:
            self.lines.append(json.loads(line))
        return status

    def events(self) -> list[str]:
        """Return the events of the supervisor's lines read so far."""
        return [line["event"] for line in self.lines]

    def report(self) -> str:
        return f"stdout: {self.lines}\nstderr: " + "\n".join(self.stderr[-40:])


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Return a function starting a daemon; every daemon left running is killed after."""
    started: list[Daemon] = []

    def run(url: str, *args: str, session: bool = False) -> Daemon:
        daemon = Daemon(url, tmp_path, *args, session=session)
        started.append(daemon)
        return daemon

    yield run
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(TIMEOUT)


def eventually(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> float:
    """Wait until ``condition()`` holds (the database, changed by other processes); return
    the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # another process's progress, seen through the database (noqa: sleep-ok)
    return time.monotonic() - began


def executors(client: World) -> dict[str, str]:
    """Return the live executor worlds: id -> name."""
    return {info.id: info.name for info in client.worlds() if info.executor and info.alive}


def wait_for_executors(client: World, ids: set[str]) -> None:
    eventually(lambda: ids <= set(executors(client)), f"executor worlds {ids} to register")


def assert_succeeded(client: World, plan_id: str) -> None:
    """Wait for the plan to stop (it may run in any worker); check that it succeeded."""
    try:
        eventually(lambda: client.load(plan_id).state == PlanState.STOPPED, f"plan {plan_id}")
    except AssertionError:
        plan = client.load(plan_id)
        steps = {i: (s.action_class_name, s.state, s.error) for i, s in plan.steps.items()}
        history = [(entry.name, entry.world_id, entry.details) for entry in plan.history]
        raise AssertionError(f"plan {plan_id} {plan.state}: {steps} {history}") from None
    plan = client.load(plan_id)
    assert plan.result == Result.SUCCESS, plan.steps


# -- usage ---------------------------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("app", "error"),
    [
        ("tests.support.no_such_app", "ModuleNotFoundError: No module named"),
        ("tests.support.broken_app", "RuntimeError: broken on purpose at import"),
    ],
)
def test_an_app_that_fails_to_import_exits_2_before_starting_anything(
    url: str, tmp_path: Path, start: Callable[..., Daemon], app: str, error: str
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app", "--app", app)
    assert daemon.finish() == 2
    stderr = "\n".join(daemon.stderr)
    assert f"Invalid value for '--app': cannot import {app}: {error}" in stderr
    assert daemon.lines == []  # no supervisor, no worker
    assert not (tmp_path / "pydynflow.db").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "Missing option '--app'"),
        (["--app", "m", "--processes", "0"], "Invalid value for '--processes'"),
        (["--app", "m", "--queue", "slow"], "Invalid value for '--queue': 'slow' is not NAME=N"),
        (["--app", "m", "--queue", "slow=x"], "'slow=x': N must be an integer"),
        (["--app", "m", "--queue", "slow=0"], "'slow=0': N must be at least 1"),
        (["--app", "m", "--queue", "default=3"], "the default queue's size is --pool-size"),
        (["--app", "m", "--fatal-persistence-timeout", "0"], "--fatal-persistence-timeout"),
        (
            ["--app", "tests.support.remote_actions", "--db", "mysql://app:s3cret@db/prod"],
            "Invalid value for '--db'",
        ),
    ],
)
def test_usage_errors_exit_2(args: list[str], named: str) -> None:
    done = CliRunner().invoke(cli, ["worker", *args])
    assert done.exit_code == 2, done.output
    assert named in done.output and "s3cret" not in done.output


def test_a_database_that_cannot_be_opened_exits_1(
    tmp_path: Path, start: Callable[..., Daemon]
) -> None:
    daemon = start("postgresql://nobody@127.0.0.1:1/none", "--app", "tests.support.worker_app")
    assert daemon.finish() == 1
    assert daemon.events() == [
        "supervisor starting",
        "cannot open the database",
        "supervisor stopped",
    ]
    assert "Connection refused" in daemon.lines[1]["error"]
    assert daemon.lines[2]["status"] == 1


# -- one worker ----------------------------------------------------------------------------


def test_sigterm_stops_the_workers_gracefully_and_deregisters_every_world(
    url: str, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app")
    (reported,) = daemon.worlds(1).values()
    with World(url, executor=False) as client:
        wait_for_executors(client, {reported["world_id"]})
        names = {info.name for info in client.worlds()}
        assert names == {"w-0", "w-supervisor", client.name}
        plan = client.trigger(Quick).wait(TIMEOUT)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert daemon.stop() == 0
        assert [info.id for info in client.worlds()] == [client.id]
    (line,) = [line for line in daemon.lines if line["event"] == "worker exited"]
    assert (line["status"], line["level"]) == (0, "info")
    assert daemon.events()[-2:] == ["worker exited", "supervisor stopped"]
    assert "restarting worker" not in daemon.events()


def test_a_killed_worker_is_restarted_and_its_world_invalidated_at_once(
    url: str, tmp_path: Path, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app")
    (first,) = daemon.worlds(1).values()
    marker = tmp_path / "crashing"
    with World(url, executor=False) as client:
        wait_for_executors(client, {first["world_id"]})
        before = client.trigger(Quick).wait(TIMEOUT)
        crashing = client.trigger(Crashes, {"marker": str(marker)})
        eventually(lambda: marker.exists() and marker.read_text(), "the step to run")
        assert int(marker.read_text()) == first["pid"]

        os.kill(first["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        invalidated = daemon.wait_for("invalidated the dead worker's world")
        assert (invalidated["world_id"], invalidated["signal"]) == (first["world_id"], "SIGKILL")
        gone = eventually(
            lambda: first["world_id"] not in {info.id for info in client.worlds()},
            "the dead world's record to go",
            timeout=VALIDITY_TIMEOUT / 3,
        )
        assert time.monotonic() - killed_at < VALIDITY_TIMEOUT / 3, gone
        assert daemon.wait_for("restarting worker", worker=0)["delay"] == 0.1
        second = daemon.wait_for("worker world", worker=0)
        assert second["world_id"] != first["world_id"] and second["pid"] != first["pid"]
        wait_for_executors(client, {second["world_id"]})

        after = client.trigger(Quick)
        assert_succeeded(client, before.id)
        assert_succeeded(client, crashing.id)
        assert_succeeded(client, after.id)
        step = next(s for s in client.load(crashing.id).steps.values() if s.phase == "run")
        assert step.output["pid"] == second["pid"]
        assert step.attempts == 2
        assert daemon.stop() == 0
        assert [info.id for info in client.worlds()] == [client.id]


def test_a_second_sigterm_stops_the_workers_at_once(
    url: str, tmp_path: Path, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app", "--stop-timeout", "600")
    (first,) = daemon.worlds(1).values()
    marker = tmp_path / "blocking"
    with World(url, executor=False) as client:
        wait_for_executors(client, {first["world_id"]})
        blocked = client.trigger(Crashes, {"marker": str(marker)})
        eventually(lambda: marker.exists() and marker.read_text(), "the step to run")
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for("stopping the workers", reason="SIGTERM")
        # The step never ends by itself: without the second signal the stop takes 600 s.
        assert daemon.stop(signal.SIGINT) == 0
        assert "stopping the workers now: running steps are left running" in daemon.events()
        assert [info.id for info in client.worlds()] == [client.id]
        assert client.load(blocked.id).state != PlanState.STOPPED


def test_ctrl_c_in_a_terminal_stops_the_workers_gracefully(
    url: str, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app", session=True)
    (reported,) = daemon.worlds(1).values()
    with World(url, executor=False) as client:
        wait_for_executors(client, {reported["world_id"]})
        # The terminal signals the whole foreground process group: the workers live in
        # groups of their own, so they get one SIGTERM, from the supervisor (no hurry).
        os.killpg(daemon.process.pid, signal.SIGINT)
        assert daemon.finish() == 0
        assert [info.id for info in client.worlds()] == [client.id]
    assert "stopping the workers now: running steps are left running" not in daemon.events()
    (stop,) = [line for line in daemon.lines if line["event"] == "stopping the workers"]
    assert stop["reason"] == "SIGINT"
    world_stderr = "\n".join(daemon.stderr)
    assert "second signal" not in world_stderr and '"world stopped"' in world_stderr


def test_workers_whose_supervisor_died_stop_gracefully(
    url: str, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app", "--processes", "2")
    reported = daemon.worlds(2)
    with World(url, executor=False) as client:
        wait_for_executors(client, {line["world_id"] for line in reported.values()})
        daemon.process.kill()
        assert daemon.finish() == -signal.SIGKILL
        eventually(
            lambda: (
                not {info.id for info in client.worlds()}
                & {line["world_id"] for line in reported.values()}
            ),
            "the orphaned workers to stop and deregister",
        )
    world_stderr = "\n".join(daemon.stderr)
    assert world_stderr.count('"world stopped"') == 2, world_stderr


@SQLITE_ONLY
def test_a_world_whose_database_is_gone_for_good_stops_the_daemon_with_status_1(
    url: str, tmp_path: Path, start: Callable[..., Daemon]
) -> None:
    url = f"{url}?busy_timeout=100"
    daemon = start(
        url, "--app", "tests.support.worker_app", "--processes", "2",
        "--fatal-persistence-timeout", "1",
    )  # fmt: skip
    reported = daemon.worlds(2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with World(url, executor=False) as client:
        wait_for_executors(client, {line["world_id"] for line in reported.values()})
        marker = tmp_path / "reading"
        client.trigger(ReadsFifo, {"fifo": str(fifo), "marker": str(marker)})
        eventually(marker.exists, "the step to run")
        # Hold the database's write lock while the step ends: its outcome cannot be stored.
        lock = sqlite3.connect(tmp_path / "pydynflow.db", isolation_level=None, timeout=TIMEOUT)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            writer = threading.Thread(target=fifo.write_text, args=("done",), daemon=True)
            writer.start()  # returns once the step opened the FIFO
            writer.join(TIMEOUT)
            assert not writer.is_alive(), "the step did not open the FIFO"
            fatal = daemon.wait_for("worker lost its database for good: stopping the daemon")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert daemon.finish() == 1
    assert fatal["status"] == 1 and "FatalPersistenceError" in fatal["error"]
    other = 1 - fatal["worker"]
    (stopped,) = [
        line
        for line in daemon.lines
        if line["event"] == "worker exited" and line["worker"] == other
    ]
    assert stopped["status"] == 0
    assert "restarting worker" not in daemon.events()
    assert daemon.lines[-1]["event"] == "supervisor stopped" and daemon.lines[-1]["status"] == 1


# -- several workers -----------------------------------------------------------------------


def test_three_workers_share_the_work_and_one_killed_is_replaced(
    url: str, tmp_path: Path, start: Callable[..., Daemon]
) -> None:
    daemon = start(url, "--app", "tests.support.worker_app", "--processes", "3")
    reported = daemon.worlds(3)
    with World(url, executor=False) as client:
        wait_for_executors(client, {line["world_id"] for line in reported.values()})
        assert sorted(executors(client).values()) == ["w-0", "w-1", "w-2"]
        marker = tmp_path / "crashing"
        crashing = client.trigger(Crashes, {"marker": str(marker)})
        quick = [client.trigger(Retried) for _ in range(6)]  # any of them may be killed
        eventually(lambda: marker.exists() and marker.read_text(), "the step to run")
        victim = next(line for line in reported.values() if line["pid"] == int(marker.read_text()))

        os.kill(victim["pid"], signal.SIGKILL)
        exited = daemon.wait_for("worker exited", worker=victim["worker"])
        assert exited["signal"] == "SIGKILL"
        eventually(
            lambda: victim["world_id"] not in {info.id for info in client.worlds()},
            "the dead world's record to go",
            timeout=VALIDITY_TIMEOUT / 3,
        )
        replaced = daemon.wait_for("worker world", worker=victim["worker"])
        assert replaced["world_id"] != victim["world_id"]
        wait_for_executors(client, {replaced["world_id"]})
        quick += [client.trigger(Retried) for _ in range(6)]
        for plan in [crashing, *quick]:
            assert_succeeded(client, plan.id)
        assert len(executors(client)) == 3
        assert daemon.stop() == 0
        assert [info.id for info in client.worlds()] == [client.id]
    exits = [line for line in daemon.lines if line["event"] == "worker exited"]
    assert sorted(line["worker"] for line in exits[-3:]) == [0, 1, 2]
    assert all(line["status"] == 0 for line in exits[-3:])
