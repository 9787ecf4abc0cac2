"""Retention: `World.delete_plans` and the plan cleaner (CLEAN-01..04), on virtual time.

Plans reach their states through the engine (run, paused by an error, suspended). The
cleaner's world runs on a `ManagedClock`: moving it fires the cleaner's timer and moves the
wall time plans age by, and `PlanCleaner.wait_for_run` waits for the run it asked for.
Every test runs on a SQLite file, SQLite in memory and PostgreSQL unless it says otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action, ExecutionPlan, PlanState, Result, Triggered, World
from pydynflow.retention import BACKUP_FORMAT, DeletedBatch, PlanCleaner
from pydynflow.testing import ManagedClock

TIMEOUT = 30
ROOT = Path(__file__).resolve().parents[1]
SUSPENDED: dict[str, threading.Event] = {}


class Succeeds(Action):
    """A run step with an output and an output chunk."""

    label = "retention succeeds"

    def run(self) -> None:
        self.output["done"] = self.input.get("n", 0)
        self.output_chunk(f"line {self.input.get('n', 0)}", kind="stdout")


class Fails(Action):
    """Fails: its plan pauses with an error."""

    def run(self) -> None:
        raise RuntimeError("disk full")


class Waits(Action):
    """Suspends until an event: its plan stays running."""

    def run(self, event: Any = None) -> None:
        if event is None:
            key = self.input["key"]
            self.suspend(lambda ref: SUSPENDED[key].set())
        self.output["event"] = event


class WithReference(Action):
    """Two children, the second's input referencing the output of the first, which fails:
    the plan pauses with the reference unresolved."""

    def plan(self) -> None:
        first = self.plan_action(Fails)
        self.plan_action(Succeeds, {"n": 2, "from": first.output["done"]})


@pytest.fixture
def clock() -> ManagedClock:
    return ManagedClock()


@pytest.fixture
def world(db_url: str, clock: ManagedClock) -> Iterator[World]:
    with World(db_url, clock=clock, auto_execute=False, delayed_executor=False) as started:
        yield started


def run(world: World, action: type[Action], *args: Any) -> ExecutionPlan:
    return world.trigger(action, *args).wait(TIMEOUT)


def suspended(world: World) -> Triggered:
    """Trigger a `Waits` plan and return it once its step is suspended."""
    key = str(uuid.uuid4())
    SUSPENDED[key] = threading.Event()
    triggered = world.trigger(Waits, {"key": key})
    assert SUSPENDED[key].wait(TIMEOUT), "the step did not suspend"
    return triggered


def stored(world: World) -> set[str]:
    return {plan.id for plan in world.plans(limit=None)}


# -- CLEAN-01..04: the cleaner ----------------------------------------------------------------


def test_clean01_a_world_has_a_cleaner_only_with_keep_plans_for(sqlite_url: str) -> None:
    with World(sqlite_url) as world:
        assert world.keep_plans_for is None and world.plan_cleaner is None
    with World(sqlite_url, keep_plans_for=timedelta(days=30)) as world:
        cleaner = world.plan_cleaner
        assert isinstance(cleaner, PlanCleaner)
        assert cleaner.keep_for == timedelta(days=30) and cleaner.interval == 3600.0
    assert world.plan_cleaner is None  # stopped with its world
    with World(sqlite_url, executor=False, keep_plans_for=timedelta(days=1)) as client:
        assert client.plan_cleaner is None  # only executor worlds clean


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_plans_for": 30}, "keep_plans_for must be None or a timedelta"),
        ({"keep_plans_for": timedelta(seconds=-1)}, "keep_plans_for must be None or a timedelta"),
        ({"cleaner_interval": 0}, "cleaner_interval must be a positive number"),
        ({"cleaner_interval": True}, "cleaner_interval must be a positive number"),
    ],
)
def test_cleaner_settings_are_checked(
    sqlite_url: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        World(sqlite_url, **kwargs)


def test_clean02_the_cleaner_runs_at_start_then_on_its_clock_timer(
    db_url: str, clock: ManagedClock
) -> None:
    with World(
        db_url,
        clock=clock,
        auto_execute=False,
        delayed_executor=False,
        keep_plans_for=timedelta(seconds=1000),
        cleaner_interval=timedelta(minutes=10),
    ) as world:
        cleaner = world.plan_cleaner
        assert cleaner is not None and cleaner.wait_for_run(TIMEOUT)
        assert cleaner.runs == 1 and cleaner.deleted == 0

        def armed() -> list[Any]:
            return [timer for timer in clock.pending() if timer.callback == cleaner._ticked]

        first = cleaner.timer
        assert armed() == [first] and first is not None and first.due == clock.now() + 600
        clock.advance(599)
        assert cleaner.runs == 1 and first.pending
        clock.advance(1)
        assert cleaner.wait_for_run(TIMEOUT) and cleaner.runs == 2
        assert first.fired and armed() == [cleaner.timer] and cleaner.timer is not first
    assert armed() == []  # its timer is cancelled with its world


def test_clean03_04_old_stopped_plans_go_new_ones_and_unstopped_ones_stay(
    db_url: str, clock: ManagedClock
) -> None:
    with World(
        db_url,
        clock=clock,
        auto_execute=False,
        delayed_executor=False,
        keep_plans_for=timedelta(seconds=1000),
        cleaner_interval=600,
    ) as world:
        cleaner = world.plan_cleaner
        assert cleaner is not None and cleaner.wait_for_run(TIMEOUT)
        finished = {run(world, Succeeds, {"n": n}).id for n in range(10)}
        paused = run(world, Fails).id
        running = suspended(world).id
        # CLEAN-04: 600 s on, they ended 400 s too recently
        clock.advance(600)
        assert cleaner.wait_for_run(TIMEOUT) and cleaner.deleted == 0
        assert stored(world) == finished | {paused, running}
        # CLEAN-03: 1,200 s on, they ended 200 s before the 1,000 s they are kept for
        clock.advance(600)
        assert cleaner.wait_for_run(TIMEOUT) and cleaner.deleted == 10
        assert stored(world) == {paused, running}
        assert world.load(paused).state == PlanState.PAUSED
        assert world.load(running).state == PlanState.RUNNING


def test_the_cleaner_writes_its_backup(sqlite_url: str, tmp_path: Path) -> None:
    with World(sqlite_url) as world:
        done = [run(world, Succeeds, {"n": n}).id for n in range(3)]
    backup = tmp_path / "cleaned.jsonl"
    with World(sqlite_url, keep_plans_for=timedelta(0), cleaner_backup=backup) as world:
        cleaner = world.plan_cleaner
        assert cleaner is not None and cleaner.wait_for_run(TIMEOUT)
        assert cleaner.deleted == 3 and stored(world) == set()
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert sorted(line["plan"]["id"] for line in lines) == sorted(done)


def test_deleting_twice_is_harmless(sqlite_url: str, clock: ManagedClock) -> None:
    """Two executor worlds cleaning one database: each plan is deleted once."""
    with World(sqlite_url) as world:
        done = {run(world, Succeeds, {"n": n}).id for n in range(20)}
    worlds = [
        World(sqlite_url, clock=clock, keep_plans_for=timedelta(0), auto_execute=False)
        for _ in range(2)
    ]
    try:
        for started in worlds:
            started.start()
        cleaners = [started.plan_cleaner for started in worlds]
        assert all(cleaner is not None and cleaner.wait_for_run(TIMEOUT) for cleaner in cleaners)
        clock.advance(3600)  # both run again: nothing left to delete
        assert all(cleaner is not None and cleaner.wait_for_run(TIMEOUT) for cleaner in cleaners)
        assert sum(cleaner.deleted for cleaner in cleaners if cleaner) == len(done)
        assert stored(worlds[0]) == set()
    finally:
        for started in worlds:
            started.stop()


# -- delete_plans -------------------------------------------------------------------------------


def test_by_default_stopped_plans_go_and_paused_and_running_ones_stay(world: World) -> None:
    done = {run(world, Succeeds).id for _ in range(3)}
    paused = run(world, Fails).id
    running = suspended(world).id
    assert world.delete_plans(dry_run=True) == 3
    assert stored(world) == done | {paused, running}
    assert world.delete_plans() == 3
    assert stored(world) == {paused, running}
    assert world.delete_plans() == 0


def test_paused_plans_go_only_when_asked_and_running_ones_never(world: World) -> None:
    run(world, Succeeds)
    paused = run(world, Fails).id
    waiting = suspended(world)
    running = waiting.id
    with pytest.raises(ValueError, match="paused plans are deleted only with include_paused"):
        world.delete_plans(state="paused")
    for state in ("running", ["stopped", "running"], "planning", "pending"):
        with pytest.raises(ValueError, match="are never deleted: they may run on a world"):
            world.delete_plans(state=state, include_paused=True)
    assert world.delete_plans(include_paused=True) == 2
    assert paused not in stored(world)
    assert stored(world) == {running}
    assert world.load(running).state == PlanState.RUNNING
    world.event(running, 2, "go on")  # its rows are whole: it finishes
    ended = waiting.wait(TIMEOUT)
    assert (ended.state, ended.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert ended.steps[2].output == {"event": "go on"}


def test_filters_by_result_label_and_age(world: World, clock: ManagedClock) -> None:
    succeeded = run(world, Succeeds).id
    failed = run(world, Fails).id  # paused, error
    world.halt(failed)  # stopped, error
    assert world.load(failed).state == PlanState.STOPPED
    with pytest.raises(ValueError, match="unknown result 'fine'"):
        world.delete_plans(result="fine")
    with pytest.raises(ValueError, match="unknown state 'done'"):
        world.delete_plans(state="done")
    assert world.delete_plans(label="no such label") == 0
    assert world.delete_plans(older_than=timedelta(seconds=100)) == 0
    clock.advance(200)  # the world's wall time: they ended 200 s ago
    assert world.delete_plans(older_than=timedelta(seconds=300)) == 0
    assert world.delete_plans(result=Result.SUCCESS, older_than=timedelta(seconds=100)) == 1
    assert stored(world) == {failed}
    assert world.delete_plans(older_than=datetime.now(UTC) - timedelta(hours=1)) == 0
    assert world.delete_plans(label=Fails.__module__ + ".Fails", result=["error"]) == 1
    assert stored(world) == set() and succeeded not in stored(world)
    with pytest.raises(ValueError, match="older_than must not be negative"):
        world.delete_plans(older_than=timedelta(seconds=-1))


def test_scheduled_plans_go_only_when_named(db_url: str, clock: ManagedClock) -> None:
    with World(db_url, clock=clock, auto_execute=False) as world:
        later = clock.utcnow() + timedelta(days=1)
        scheduled = world.delay(Succeeds, {"start_at": later}, {"n": 1}).id
        assert world.delete_plans() == 0
        assert world.delete_plans(state="scheduled") == 1
        assert stored(world) == set() and world.storage.delayed_plan(scheduled) is None


def test_batches_and_their_backup_lines(world: World, tmp_path: Path) -> None:
    plans = [run(world, Succeeds, {"n": n}) for n in range(4)]
    plans.append(run(world, WithReference))
    plans.append(run(world, Fails))
    loaded = {plan.id: world.load(plan.id) for plan in plans}
    backup = tmp_path / "deleted.jsonl"
    backup.write_text("")  # appended to

    def lines() -> int:
        return len(backup.read_text().splitlines())

    seen: list[tuple[int, int]] = []

    def progress(batch: DeletedBatch) -> None:
        seen.append((batch.total, lines()))  # written before its batch was deleted

    deleted = world.delete_plans(
        backup=backup, include_paused=True, batch_size=2, progress=progress
    )
    assert deleted == 6 and stored(world) == set()
    assert [total for total, _ in seen] == [2, 4, 6]
    assert all(written >= total for total, written in seen)
    records = {}
    for line in backup.read_text().splitlines():
        record = json.loads(line)
        records[record["plan"]["id"]] = record
    assert sorted(records) == sorted(loaded)
    for plan_id, plan in loaded.items():
        record = records[plan_id]
        assert record["format"] == BACKUP_FORMAT
        assert record["plan"]["state"] == plan.state and record["plan"]["result"] == plan.result
        assert record["plan"]["label"] == plan.label and record["plan"]["valid"] is True
        assert [entry["name"] for entry in record["plan"]["history"]] == [
            entry.name for entry in plan.history
        ]
        assert [action["id"] for action in record["actions"]] == sorted(plan.actions)
        for action in record["actions"]:
            stored_action = plan.actions[action["id"]]
            assert action["action_class"] == stored_action.action_class_name
            assert action["output"] == stored_action.output
        assert [(step["id"], step["state"]) for step in record["steps"]] == [
            (step.id, step.state) for _, step in sorted(plan.steps.items())
        ]
    failed = records[plans[-1].id]
    errors = [step["error"] for step in failed["steps"] if step["error"]]
    assert errors and errors[0]["message"] == "disk full"
    referencing = records[plans[-2].id]["actions"][2]["input"]
    assert referencing["n"] == 2
    assert referencing["from"]["__output_reference__"]["subkeys"] == ["done"]


def test_a_backup_that_cannot_be_written_deletes_nothing(world: World, tmp_path: Path) -> None:
    done = run(world, Succeeds).id
    with pytest.raises(FileNotFoundError):
        world.delete_plans(backup=tmp_path / "missing" / "deleted.jsonl")
    assert stored(world) == {done}


def test_dry_run_deletes_and_writes_nothing(world: World, tmp_path: Path) -> None:
    done = run(world, Succeeds).id
    backup = tmp_path / "deleted.jsonl"
    assert world.delete_plans(dry_run=True, backup=backup) == 1
    assert stored(world) == {done} and not backup.exists()


def test_a_client_world_deletes_started_or_not(db_url: str, request: pytest.FixtureRequest) -> None:
    if db_url.endswith(":memory:"):
        pytest.skip("a client world cannot open another world's in-memory database")
    with World(db_url) as executor:
        done = {run(executor, Succeeds, {"n": n}).id for n in range(4)}
        paused = run(executor, Fails).id
        client = World(db_url, executor=False)
        try:
            assert client.delete_plans(batch_size=1) == 4  # not started
            client.start()
            assert client.delete_plans(include_paused=True) == 1
        finally:
            client.stop()
        assert stored(executor) == set() and done and paused


SCRIPT = """
import sys
from datetime import timedelta
from pydynflow import World
from tests.test_retention import Succeeds

with World(sys.argv[1]) as world:
    for n in range(3):
        world.trigger(Succeeds, {"n": n}).wait(60)
    print(world.delete_plans(result="success", batch_size=2), flush=True)
    for n in range(2):
        world.trigger(Succeeds, {"n": n}).wait(60)
with World(sys.argv[1], keep_plans_for=timedelta(0)) as world:
    assert world.plan_cleaner.wait_for_run(60)
    print(world.plan_cleaner.deleted, flush=True)
"""


def test_deletions_are_logged_with_how_many(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDYNFLOW_LOG_LEVEL": "INFO"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'log.db'}"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "2"]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    deletions = [line for line in lines if line["event"] == "deleted execution plans"]
    assert [(line["deleted"], line.get("component")) for line in deletions] == [
        (3, None),
        (2, "plan-cleaner"),
    ]
    assert deletions[0]["batches"] == 2 and deletions[0]["longest_transaction_s"] > 0
