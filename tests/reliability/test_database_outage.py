"""A database that goes away or fills up under a running writer: ridden out, or failed for good.

The writer retries a transaction that fails for a passing reason (a lost connection, a full
disk) until its ``fatal_timeout``, holding the batches' acknowledgements meanwhile; only then
do they fail, with `FatalPersistenceError`. PostgreSQL: the tests run a server of their own
(``initdb`` as the ``postgres`` OS user, so they need root), restarted and stopped under the
writer. SQLite: the database lives on a small tmpfs (mounting one needs root too) that a
filler file makes full. Without root these tests skip, unless ``PYDYNFLOW_REQUIRE_POSTGRES=1``
(CI) makes the PostgreSQL ones fail instead.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from structlog.testing import capture_logs

from pydynflow import Action, Phase, PlanState, Result, Retry, StepState, World
from pydynflow.errors import FatalPersistenceError, PersistenceError
from pydynflow.storage import Storage
from pydynflow.storage.writer import ChangeSet, ProcessWriter
from tests.storage.test_writer import (
    Acks,
    envelope_request,
    retried_for,
    retry_warned,
    stored_events,
)

pytestmark = pytest.mark.slow

IN_FLIGHT = 8  # batches the steady stream keeps unacknowledged at most
BEFORE_RESTART = 40  # batches committed before the server restarts
AFTER_RESTART = 40  # batches sent after it is back
TMPFS_SIZE = "2m"


# -- a PostgreSQL server of the test's own ----------------------------------------------------


def _pg_tool(name: str) -> str | None:
    """Return the path of the PostgreSQL program ``name`` (on PATH or in Debian's layout)."""
    found = shutil.which(name)
    if found is not None:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def _why_no_private_postgres() -> str | None:
    """Return why this machine cannot run a private PostgreSQL server (None: it can)."""
    if os.geteuid() != 0:
        return "a private PostgreSQL server runs as the postgres OS user: this needs root"
    if shutil.which("runuser") is None:
        return "runuser is not installed"
    if _pg_tool("initdb") is None or _pg_tool("pg_ctl") is None:
        return "initdb/pg_ctl not found (on PATH or in /usr/lib/postgresql/*/bin)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres OS user"
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed (the postgres extra)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server in a temporary directory, run as ``postgres`` on a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=5"

    def run(self, tool: str, *args: str) -> None:
        """Run the PostgreSQL program ``tool`` as the postgres user; fail with its output."""
        program = _pg_tool(tool)
        assert program is not None
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", program, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{tool} {' '.join(args)} failed: {done.stderr}{done.stdout}\n{tail}")

    def create(self) -> None:
        """Create the cluster (trust authentication, no fsync: a throwaway) and start it."""
        shutil.chown(self.root, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("start", "-o", options)

    def ctl(self, action: str, *args: str) -> None:
        """Run ``pg_ctl action`` on the cluster, waiting for it to complete.

        The server logs to a file: a server started with our pipe as its output would hold
        it open, and `run` would wait for it to close.
        """
        log = str(self.root / "server.log")
        self.run("pg_ctl", action, "-D", str(self.data), "-l", log, "-w", "-t", "60", *args)

    def restart(self) -> None:
        """Restart the server: a fast shutdown ends every connection (mid-transaction too)."""
        self.ctl("restart", "-m", "fast")

    def restart_in_background(
        self,
    ) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
        """Start restarting the server on a thread; return it, the event set once the
        restart ended, and the errors it met (reported on the test's thread)."""
        restarted = threading.Event()
        failed: list[BaseException] = []

        def restart() -> None:
            try:
                self.restart()
            except BaseException as exc:  # pytest.fail's too
                failed.append(exc)
            finally:
                restarted.set()

        return threading.Thread(target=restart, name="restart-postgres"), restarted, failed

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        self.ctl("stop", "-m", "fast")

    def remove(self) -> None:
        """Stop the server if it runs, whatever state it is in, and delete its files."""
        if (self.data / "postmaster.pid").exists():
            program = _pg_tool("pg_ctl")
            assert program is not None
            subprocess.run(
                ["runuser", "-u", "postgres", "--", program, "stop", "-D", str(self.data)]
                + ["-m", "immediate", "-w"],
                cwd=self.root,
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """Run a PostgreSQL server of this test's own (migrated); stop and delete it afterwards."""
    reason = _why_no_private_postgres()
    if reason is not None:
        if os.environ.get("PYDYNFLOW_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="pydynflow-pg-")))
    try:
        server.create()
        Storage(server.url).close()  # migrated
        yield server
    finally:
        server.remove()


class Stream:
    """Batches of one event each, numbered from 1, sent while no more than `IN_FLIGHT` wait
    for their acknowledgement."""

    def __init__(self, writer: ProcessWriter) -> None:
        self.writer = writer
        self.acks = Acks()
        self.sent = 0
        self.window = threading.BoundedSemaphore(IN_FLIGHT)

    def send(self) -> None:
        """Send the next batch once one in flight is acknowledged, if `IN_FLIGHT` are."""
        assert self.window.acquire(timeout=60), "no acknowledgement for a minute"
        self.sent += 1
        done = self.acks.done_for(str(self.sent))

        def acknowledged(refused: set[int], error: Any) -> None:
            done(refused, error)
            self.window.release()

        self.writer.submit([envelope_request("p", self.sent)], acknowledged)


@pytest.mark.postgres
def test_a_writer_rides_out_a_postgresql_restart_under_load(
    private_postgres: PrivatePostgres,
) -> None:
    fatal: list[BaseException] = []
    writer = ProcessWriter(private_postgres.url, on_fatal=fatal.append)
    restarter, restarted, failed = private_postgres.restart_in_background()
    retried = threading.Event()
    try:
        writer.wait_ready()
        stream = Stream(writer)
        with capture_logs(processors=[retry_warned(retried)]):
            while stream.sent < BEFORE_RESTART:
                stream.send()
            restarter.start()  # the stream goes on while the server goes down and comes back
            while not restarted.is_set():
                stream.send()
            last = stream.sent + AFTER_RESTART
            while stream.sent < last:
                stream.send()
            restarter.join(60)
            assert failed == []
            assert writer.drain(60)
        assert retried.is_set()  # the restart was felt: a transaction was retried
        assert [(name, error) for name, _, error in stream.acks.calls] == [
            (str(n), None) for n in range(1, stream.sent + 1)
        ]
        assert fatal == [] and writer.restarts == 0  # the same child, on a new connection
    finally:
        writer.close()
    stored = [step for _, step, _ in stored_events(private_postgres.url)]
    assert stored == list(range(1, stream.sent + 1))  # each batch once


@pytest.mark.postgres
def test_a_writer_fails_for_good_when_postgresql_stays_down(
    private_postgres: PrivatePostgres,
) -> None:
    fatal: list[tuple[BaseException, str]] = []
    writer = ProcessWriter(
        private_postgres.url,
        fatal_timeout=2.0,
        on_fatal=lambda error: fatal.append((error, threading.current_thread().name)),
    )
    acks = Acks()
    try:
        writer.wait_ready()
        assert writer.write([envelope_request("p", 0)]) == set()  # connected
        private_postgres.stop()
        writer.submit_all([([envelope_request("p", n)], acks.done_for(str(n))) for n in (1, 2)])
        assert writer.drain(30)
        assert [name for name, _, _ in acks.calls] == ["1", "2"]
        errors = [error for _, _, error in acks.calls]
        assert all(isinstance(error, FatalPersistenceError) for error in errors)
        message = str(errors[0])
        assert 2.0 <= retried_for(errors[0]) < 3.0
        assert "OperationalError" in message and "refused" in message  # the cause, named
        assert fatal == [(errors[0], "pydynflow-writer-replies")]  # once, from the reader
    finally:
        writer.close()


@pytest.mark.postgres
def test_a_connection_lost_inside_a_transaction_is_named_and_replaced(postgres_url: str) -> None:
    import psycopg2

    storage = Storage(postgres_url)
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    try:
        victim = storage.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(PersistenceError) as lost, storage.transaction():
            storage.add_envelope("p", 1, {"n": 1})
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", (victim,))
            storage.add_envelope("p", 2, {"n": 2})
        # The loss itself, a passing failure, not the rollback that could not follow it.
        assert isinstance(
            lost.value.__cause__, (peewee.OperationalError, psycopg2.OperationalError)
        )
        assert "connection already closed" not in str(lost.value)
        with storage.transaction():  # on a new connection
            storage.add_envelope("p", 3, {"n": 3})
        assert [step for _, step, _ in storage.envelopes("p")] == [3]
    finally:
        admin.close()
        storage.close()


# -- SQLite on a full filesystem ------------------------------------------------------------


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """Mount a `TMPFS_SIZE` tmpfs for the test; unmount it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="pydynflow-tmpfs-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:  # no mount program
        mounted = subprocess.CompletedProcess([], 1, "", str(exc))
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # still in use
        folder.rmdir()


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` up with a file of zeros; return that file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def big_event(step_id: int) -> ChangeSet:
    """A change set storing an event far larger than what a full disk has left."""
    return ChangeSet(envelope_add=(("p", step_id, {"pad": "x" * 200_000}),))


def test_a_full_disk_is_named_not_hidden_by_the_failed_rollback(small_tmpfs: Path) -> None:
    storage = Storage(f"sqlite:///{small_tmpfs / 'x.db'}")
    try:
        filler = fill(small_tmpfs)
        with pytest.raises(PersistenceError) as failure, storage.transaction():
            storage.add_envelope("p", 1, {"pad": "x" * 200_000})
        assert "database or disk is full" in str(failure.value)
        assert "cannot rollback" not in str(failure.value)
        filler.unlink()
        with storage.transaction():  # the same connection serves on once there is room
            storage.add_envelope("p", 2, {"pad": "x" * 200_000})
        assert [step for _, step, _ in storage.envelopes("p")] == [2]
    finally:
        storage.close()


def test_a_writer_fails_for_good_when_the_disk_stays_full(small_tmpfs: Path) -> None:
    url = f"sqlite:///{small_tmpfs / 'x.db'}"
    Storage(url).close()
    fatal: list[BaseException] = []
    writer = ProcessWriter(url, fatal_timeout=1.0, on_fatal=fatal.append)
    try:
        writer.wait_ready()
        fill(small_tmpfs)
        with pytest.raises(FatalPersistenceError) as failure:
            writer.write([big_event(1)])
        message = str(failure.value)
        assert 1.0 <= retried_for(failure.value) < 2.0
        assert "database or disk is full" in message and "cannot rollback" not in message
        assert fatal == [failure.value]
    finally:
        writer.close()


def test_a_writer_commits_once_space_is_freed_while_it_retries(small_tmpfs: Path) -> None:
    url = f"sqlite:///{small_tmpfs / 'x.db'}"
    Storage(url).close()
    fatal: list[BaseException] = []
    writer = ProcessWriter(url, on_fatal=fatal.append)
    acks = Acks()
    retried = threading.Event()
    try:
        writer.wait_ready()
        filler = fill(small_tmpfs)
        with capture_logs(processors=[retry_warned(retried)]) as logs:
            writer.submit([big_event(1)], acks.done_for("big"))
            assert retried.wait(30)
            assert acks.calls == []  # held while its transaction is retried
            filler.unlink()
            assert writer.drain(30)
        assert acks.calls == [("big", set(), None)]
        assert fatal == [] and writer.restarts == 0
        warnings = [line for line in logs if "retrying" in line["event"]]
        assert "database or disk is full" in warnings[0]["cause"]
    finally:
        writer.close()
    assert [step for _, step, _ in stored_events(url)] == [1]


# -- a whole world under the outage --------------------------------------------------------


class TenMillis(Action):
    """A step of 10 ms of work (the workload, not synchronisation)."""

    rescue = Retry(3, backoff=0.05)

    def run(self) -> None:
        time.sleep(0.01)  # the step's work (noqa: sleep-ok)
        self.output["i"] = self.input["i"]


class FiveInARow(Action):
    def plan(self) -> None:
        with self.sequence():
            for i in range(5):
                self.plan_action(TenMillis, {"i": i})


class HeldStep(Action):
    """Runs until the test lets it go (the database goes away meanwhile)."""

    rescue = Retry(1, backoff=0.01)
    started = threading.Event()
    release = threading.Event()

    def run(self) -> None:
        HeldStep.started.set()
        HeldStep.release.wait(60)


@pytest.mark.postgres
def test_a_world_rides_out_a_postgresql_restart_under_load(
    private_postgres: PrivatePostgres,
) -> None:
    restarter, restarted, failed = private_postgres.restart_in_background()
    with World(private_postgres.url) as world:
        triggered = [world.trigger(FiveInARow) for _ in range(20)]
        restarter.start()
        while not restarted.is_set():  # planning and triggering go on through the outage
            triggered.append(world.trigger(FiveInARow))
        triggered += [world.trigger(FiveInARow) for _ in range(20)]
        restarter.join(60)
        assert failed == []
        plans = [one.wait(120) for one in triggered]
        assert world.fatal_error is None
    for plan in plans:
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan.id
    reader = World(private_postgres.url, executor=False)
    try:
        for plan in plans:
            stored = reader.load(plan.id)
            assert (stored.state, stored.result) == (PlanState.STOPPED, Result.SUCCESS)
            steps = stored.steps_of_phase(Phase.RUN)
            assert [step.state for step in steps] == [StepState.SUCCESS] * 5
            assert [step.output for step in steps] == [{"i": i} for i in range(5)]
            for before, after in zip(steps, steps[1:], strict=False):  # in sequence
                assert before.ended_at <= after.started_at, plan.id
    finally:
        reader.stop()


@pytest.mark.postgres
def test_a_world_stops_when_postgresql_stays_down_and_the_next_one_recovers(
    private_postgres: PrivatePostgres,
) -> None:
    HeldStep.started.clear()
    HeldStep.release.clear()
    world = World(private_postgres.url, fatal_persistence_timeout=2.0).start()
    try:
        triggered = world.trigger(HeldStep)
        assert HeldStep.started.wait(30)
        private_postgres.stop()
        HeldStep.release.set()  # its outcome cannot be committed now
        with pytest.raises(FatalPersistenceError):
            triggered.wait(60)
        assert isinstance(world.fatal_error, FatalPersistenceError)
        with pytest.raises(PersistenceError, match="could not be written for 2 s"):
            world.trigger(HeldStep)
    finally:
        world.stop()
    private_postgres.ctl("start", "-o", f"-p {private_postgres.port} -k {private_postgres.root}")
    with World(private_postgres.url) as next_world:
        (continued,) = next_world.auto_executed  # stored running: recovered, then retried
        plan = continued.wait(60)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.steps[2].attempts == 2  # the run the world lost, then its retry
