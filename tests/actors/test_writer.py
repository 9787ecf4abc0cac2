"""The persistence actor's writers: a supervised child process, or the actor's own thread."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action, PersistenceError, PlanState, Result, World
from pydynflow.actors.writer import ProcessWriter, ThreadWriter, writer_for
from pydynflow.storage import Storage


class Hop(Action):
    """A no-op step."""

    def run(self, event: Any = None) -> None:
        pass


class Hops(Action):
    """``n`` no-op steps in sequence."""

    def plan(self, n: int = 3) -> None:
        with self.sequence():
            for i in range(n):
                self.plan_action(Hop, {"i": i})


def writer_of(world: World) -> Any:
    return world._runtime.persistence.proxy().writer.get()  # type: ignore[union-attr]


def test_a_file_database_is_written_by_a_child_process(sqlite_url: str) -> None:
    with World(sqlite_url) as world:
        writer = writer_of(world)
        assert isinstance(writer, ProcessWriter)
        assert writer.pid is not None and writer.pid != os.getpid()
        plan = world.trigger(Hops, 3).wait(30)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        pid = writer.pid
    assert writer.pid is None  # closed with the world
    with pytest.raises(ProcessLookupError):  # reaped, not left behind
        os.kill(pid, 0)


def test_an_in_memory_database_is_written_on_the_persistence_thread(memory_url: str) -> None:
    with World(memory_url) as world:
        assert isinstance(writer_of(world), ThreadWriter)
        plan = world.trigger(Hops, 2).wait(30)
        assert plan.result == Result.SUCCESS


def test_the_environment_can_force_the_thread_writer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDYNFLOW_PERSISTENCE", "thread")
    storage = Storage(sqlite_url)
    try:
        assert isinstance(writer_for(storage), ThreadWriter)
    finally:
        storage.close()


def test_a_killed_writer_is_replaced_and_no_change_is_lost(sqlite_url: str) -> None:
    with World(sqlite_url) as world:
        writer = writer_of(world)
        first = world.trigger(Hops, 3).wait(30)
        old = writer.pid
        os.kill(old, signal.SIGKILL)
        os.waitpid(old, 0) if False else None  # reaped by the writer itself
        second = world.trigger(Hops, 3).wait(30)
        assert writer.pid not in (None, old)
        assert writer.restarts == 1
    with World(sqlite_url, executor=False) as reader:
        for plan in (first, second):
            stored = reader.load(plan.id)
            assert (stored.state, stored.result) == (PlanState.STOPPED, Result.SUCCESS)


def test_a_writer_that_cannot_open_the_database_fails_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'not-there' / 'x.db'}"  # its directory does not exist
    writer = ProcessWriter(url)
    try:
        with pytest.raises(PersistenceError, match="could not open the database"):
            writer.wait_ready()
    finally:
        writer.close()


def test_a_failed_transaction_comes_back_as_a_persistence_error(sqlite_url: str) -> None:
    Storage(sqlite_url).close()  # migrated
    writer = ProcessWriter(sqlite_url)
    try:
        writer.wait_ready()
        # A step row for a plan that does not exist breaks the foreign key.
        row = ("no-such-plan", 1, 1, "pending", "run", None, None, None, None, 0.0, 1.0, 0,
               "default", "x.Hop", None, None)  # fmt: skip
        with pytest.raises(PersistenceError, match="FOREIGN KEY"):
            writer.write([((row,), (), (), None, (), (), (), ())])
        assert writer.write([((), (), (), None, (), (), (), ())]) == set()  # still serving
    finally:
        writer.close()


def test_postgresql_is_written_by_a_child_process(postgres_url: str) -> None:
    with World(postgres_url) as world:
        assert isinstance(writer_of(world), ProcessWriter)
        plan = world.trigger(Hops, 3).wait(30)
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert world.load(plan.id).result == Result.SUCCESS


def test_a_world_whose_writer_cannot_start_fails_to_start_and_leaves_nothing_running(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = f"sqlite:///{tmp_path / 'not-there' / 'x.db'}"
    monkeypatch.setattr(
        "pydynflow.actors.persistence.writer_for", lambda storage: ProcessWriter(broken)
    )
    threads = threading.active_count()
    world = World(sqlite_url, executor="processes", pool_size=1)  # workers start at once
    with pytest.raises(PersistenceError, match="could not open the database"):
        world.start()
    assert threading.active_count() == threads  # no dispatcher, pool or writer left
