"""1,000 delayed plans due at the same moment, two executor processes on PostgreSQL.

A client world in this process delays N plans (`World.delay`) due at one moment a few
seconds ahead; two executor worlds in child processes (this script with ``--serve``, the
default 15 s poll interval) share the schema, and the one holding the delayed-executor lock
plans and runs them. Each plan appends one line when it is planned and one when it runs
(``O_APPEND``, plan id and pid): the script counts them, so that every plan must be planned
exactly once and run exactly once, or it exits 1. Time: from the due moment to the last
plan's end, as the client sees it. Baseline of the same run, on a fresh schema with two
fresh executor processes: the same N plans triggered directly by the client world
(`World.trigger` from 16 caller threads started before the clock), first trigger to last
end. ``--repeat`` rounds, alternating; medians.

    .venv/bin/python bench/bench_delayed.py [--plans 1000] [--repeat 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydynflow import Action, World  # noqa: E402

POSTGRES = os.environ.get("PYDYNFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"
MARGIN = 3.0  # seconds between the last delay stored and the due moment


def note(path: str, plan_id: str) -> None:
    """Append ``plan_id pid`` to ``path`` in one write (atomic across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{plan_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


class Noted(Action):
    """Notes its planning and its run in the files its arguments name."""

    def plan(self, planned: str, ran: str) -> None:
        note(planned, self.execution_plan_id)
        self.plan_self({"ran": ran})

    def run(self) -> None:
        note(self.input["ran"], self.execution_plan_id)


def serve(db: str) -> int:
    """Run one executor world until stdin closes."""
    world = World(db, pool_size=8).start()
    print(f"ready {world.id}", flush=True)
    sys.stdin.read()
    world.stop()
    return 0


class Schema:
    """A fresh PostgreSQL schema, migrated, with two executor processes on it."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{self.name}"')
        separator = "&" if "?" in POSTGRES else "?"
        self.url = f"{POSTGRES}{separator}options=-csearch_path%3D{self.name}"
        World(self.url, executor=False, create=True).stop()  # migrates
        self.children = [
            subprocess.Popen(
                [sys.executable, __file__, "--serve", self.url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        self.worlds: dict[str, int] = {}
        for child in self.children:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            assert line and line[0] == "ready", line
            self.worlds[line[1]] = child.pid

    def close(self) -> None:
        for child in self.children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(120)
        with self.admin.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{self.name}" CASCADE')


def ledger(path: Path) -> collections.Counter[str]:
    """Return how many lines each plan id has in ``path``."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[0] for line in path.read_text().splitlines())


def pids(path: Path) -> dict[int, int]:
    """Return how many lines each pid wrote to ``path``."""
    if not path.exists():
        return {}
    return dict(collections.Counter(int(line.split()[1]) for line in path.read_text().splitlines()))


def check(ids: list[str], workdir: Path) -> dict[str, Any]:
    """Count the lines of each plan: exactly once each, or ``ok`` is False."""
    planned, ran = ledger(workdir / "planned"), ledger(workdir / "ran")
    wanted = collections.Counter(ids)
    return {
        "plans": len(ids),
        "planned_once": sum(1 for i in ids if planned[i] == 1),
        "ran_once": sum(1 for i in ids if ran[i] == 1),
        "planned_twice_or_more": sum(1 for i in ids if planned[i] > 1),
        "ran_twice_or_more": sum(1 for i in ids if ran[i] > 1),
        "strangers": sum((planned - wanted).values()) + sum((ran - wanted).values()),
        "ok": planned == wanted and ran == wanted,
        "planned_by_pid": pids(workdir / "planned"),
        "ran_by_pid": pids(workdir / "ran"),
    }


def wait_all_stopped(client: World, count: int, timeout: float = 600) -> float:
    """Wait until ``count`` plans are stopped; return when (perf_counter)."""
    deadline = time.monotonic() + timeout
    while client.storage.count_plans(state="stopped") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {count} plans stopped within {timeout} s")
        time.sleep(0.02)  # the executors' progress, seen through the database
    return time.perf_counter()


def delayed_round(admin: Any, plans: int) -> dict[str, Any]:
    schema = Schema(admin)
    workdir = Path(tempfile.mkdtemp(prefix="bench-delayed-"))
    planned, ran = str(workdir / "planned"), str(workdir / "ran")
    try:
        with World(schema.url, executor=False) as client:
            started = time.perf_counter()
            # Due once every delay is stored (about 3 ms each here), with a margin.
            due = datetime.now(UTC) + timedelta(seconds=plans * 0.006 + MARGIN)
            ids = [client.delay(Noted, {"start_at": due}, planned, ran).id for _ in range(plans)]
            stored = time.perf_counter() - started
            early = plans - client.storage.count_plans(state="scheduled")
            wait = (due - datetime.now(UTC)).total_seconds()
            due_at = time.perf_counter() + wait
            ended = wait_all_stopped(client, plans)
            holder = client.storage.record_owner(
                "pydynflow.DelayedExecutorLock", "delayed-executor"
            )
            failed = client.storage.count_plans(result=["error", "warning", "cancelled", "pending"])
        result = check(ids, workdir)
        result.update(
            seconds=round(ended - due_at, 3),
            store_seconds=round(stored, 3),
            plans_not_scheduled_at_due_time=early,
            not_success=failed,
            holder_pid=schema.worlds.get(holder or ""),
        )
        return result
    finally:
        schema.close()


def triggered_round(admin: Any, plans: int) -> dict[str, Any]:
    schema = Schema(admin)
    workdir = Path(tempfile.mkdtemp(prefix="bench-triggered-"))
    planned, ran = str(workdir / "planned"), str(workdir / "ran")
    try:
        with World(schema.url, executor=False) as client, ThreadPoolExecutor(16) as callers:
            list(callers.map(lambda _: None, range(16)))  # threads up before the clock
            started = time.perf_counter()
            triggered = list(
                callers.map(lambda _: client.trigger(Noted, planned, ran), range(plans))
            )
            done = [t.wait(600) for t in triggered]
            ended = time.perf_counter()
        result = check([plan.id for plan in done], workdir)
        result.update(
            seconds=round(ended - started, 3),
            not_success=sum(1 for plan in done if plan.result != "success"),
        )
        return result
    finally:
        schema.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the report here")
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    import psycopg2

    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    rounds: dict[str, list[dict[str, Any]]] = {"delayed": [], "triggered": []}
    try:
        for _ in range(args.repeat):
            rounds["delayed"].append(delayed_round(admin, args.plans))
            rounds["triggered"].append(triggered_round(admin, args.plans))
    finally:
        admin.close()
    ok = all(r["ok"] and r["not_success"] == 0 for rs in rounds.values() for r in rs)
    medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in rounds.items()}
    for name, rs in rounds.items():
        last = rs[-1]
        print(
            f"{name:9} {medians[name]:7.3f} s {args.plans / medians[name]:7.0f} plans/s  "
            f"planned once {last['planned_once']}/{last['plans']}  "
            f"ran once {last['ran_once']}/{last['plans']}  "
            f"planned by {last['planned_by_pid']}  ran by {last['ran_by_pid']}"
        )
    delayed = rounds["delayed"][-1]
    print(
        f"delays stored in {delayed['store_seconds']:.3f} s; due to last end "
        f"{medians['delayed']:.3f} s = {medians['delayed'] / medians['triggered']:.2f}x the "
        "triggered baseline's first trigger to last end"
    )
    report = {"plans": args.plans, "ok": ok, "median_seconds": medians, "rounds": rounds}
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (RESULTS / f"delayed-{stamp}.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    print("OK" if ok else "FAILED: a plan was not planned and run exactly once, or failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
