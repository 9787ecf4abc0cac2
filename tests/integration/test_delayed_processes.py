"""Delayed plans with two executor processes on PostgreSQL: one delayed executor per database.

Two `tests.support.delayed_service` processes share a PostgreSQL schema; this process's
client world delays plans due at the same moment. Each plan notes its planning and its run
in files (one ``O_APPEND`` line each, with the plan id and the pid): every plan must be
planned once and run once, by whichever process holds the delayed-executor lock, and the
survivor takes the lock over when its holder is killed.
"""

from __future__ import annotations

import collections
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pydynflow import PlanState, Result, World
from pydynflow.scheduling.executor import LOCK_CLASS, LOCK_ID
from tests.support.delayed_actions import Recorded
from tests.support.forked import spawn

TIMEOUT = 120
POLL_INTERVAL = "0.5"

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class ExecutorProcess:
    """`tests.support.delayed_service` running on ``url``."""

    def __init__(self, url: str) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = spawn("tests.support.delayed_service", url, POLL_INTERVAL, stderr=self.log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the world is started
        if not line.startswith("ready "):
            self.process.kill()
            self.process.wait(TIMEOUT)
            raise AssertionError(f"the executor did not start: {line!r} {self.stderr()}")
        self.world_id = line.split()[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@pytest.fixture
def executors(postgres_url: str) -> Iterator[list[ExecutorProcess]]:
    started = [ExecutorProcess(postgres_url), ExecutorProcess(postgres_url)]
    try:
        yield started
    finally:
        for one in started:
            one.close()


def eventually(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # other processes' progress, seen through the database (noqa: sleep-ok)


def lines(path: Path) -> list[tuple[str, int]]:
    """Return the ``(plan id, pid)`` lines ``Recorded`` appended to ``path``."""
    if not path.exists():
        return []
    return [(plan_id, int(pid)) for plan_id, pid in map(str.split, path.read_text().splitlines())]


def delay_all(client: World, count: int, start_at: datetime, tmp_path: Path) -> list[str]:
    planned, ran = str(tmp_path / "planned"), str(tmp_path / "ran")
    return [
        client.delay(Recorded, {"start_at": start_at}, planned, ran, n).id for n in range(count)
    ]


def assert_each_planned_and_run_once(client: World, ids: list[str], tmp_path: Path) -> set[int]:
    """Check every plan's files and rows; return the pids that planned them."""
    eventually(lambda: client.storage.count_plans(state="stopped") == len(ids), "every plan")
    planned, ran = lines(tmp_path / "planned"), lines(tmp_path / "ran")
    assert collections.Counter(plan_id for plan_id, _ in planned) == dict.fromkeys(ids, 1)
    assert collections.Counter(plan_id for plan_id, _ in ran) == dict.fromkeys(ids, 1)
    for plan in client.plans(limit=None):
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS), plan.error
        names = [entry.name for entry in plan.history]
        assert names == ["delay", "start execution", "finish execution"], names
        assert plan.steps[2].attempts == 1
    return {pid for _, pid in planned}


def test_plans_due_at_the_same_moment_are_each_planned_and_run_once(
    postgres_url: str, executors: list[ExecutorProcess], tmp_path: Path
) -> None:
    count = 1000
    with World(postgres_url, executor=False) as client:
        eventually(lambda: client.storage.record_owner(LOCK_CLASS, LOCK_ID), "a delayed executor")
        holder = client.storage.record_owner(LOCK_CLASS, LOCK_ID)
        start_at = datetime.now(UTC) + timedelta(seconds=10)
        ids = delay_all(client, count, start_at, tmp_path)
        assert datetime.now(UTC) < start_at, "delaying took longer than the test allows"
        assert client.storage.count_plans(state="scheduled") == count  # none ran early
        planners = assert_each_planned_and_run_once(client, ids, tmp_path)
        assert client.storage.record_owner(LOCK_CLASS, LOCK_ID) == holder
    by_world = {one.world_id: one.pid for one in executors}
    assert planners == {by_world[holder]}  # the lock's holder planned every one of them
    assert all(one.process.poll() is None for one in executors)


def test_the_survivor_takes_the_lock_over_when_its_holder_is_killed(
    postgres_url: str, executors: list[ExecutorProcess], tmp_path: Path
) -> None:
    with World(postgres_url, executor=False) as client:
        eventually(lambda: client.storage.record_owner(LOCK_CLASS, LOCK_ID), "a delayed executor")
        holder_id = client.storage.record_owner(LOCK_CLASS, LOCK_ID)
        holder = next(one for one in executors if one.world_id == holder_id)
        survivor = next(one for one in executors if one is not holder)
        os.kill(holder.pid, signal.SIGKILL)
        holder.process.wait(TIMEOUT)
        ids = delay_all(client, 200, datetime.now(UTC) + timedelta(seconds=1), tmp_path)
        planners = assert_each_planned_and_run_once(client, ids, tmp_path)
        assert planners == {survivor.pid}
        assert client.storage.record_owner(LOCK_CLASS, LOCK_ID) == survivor.world_id
