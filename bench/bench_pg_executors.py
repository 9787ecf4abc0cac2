"""W1 on PostgreSQL with 1 and 2 executor processes, next to PostgreSQL's one-row commit.

W1 as in ``bench_workloads.py`` (200 plans x 10 sequential no-op steps), triggered by a
client world in this process (16 caller threads started before the clock) and executed by
N executor worlds in child processes (this script with ``--serve``), each on a fresh
PostgreSQL schema of the same server. Time: first trigger to the last plan's end, as the
client learns it. Baseline of the same run: 2,000 one-row ``INSERT`` + ``COMMIT`` round trips
from this process (``synchronous_commit=on``, the server's default). ``--repeat`` rounds per
configuration, alternating; medians reported.

    .venv/bin/python bench/bench_pg_executors.py [--plans 200] [--steps 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydynflow import Action, World  # noqa: E402

POSTGRES = os.environ.get("PYDYNFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"


class NoOp(Action):
    """A step that does nothing."""

    def run(self) -> None:
        pass


class Chain(Action):
    """``steps`` no-op steps in sequence."""

    def plan(self, steps: int) -> None:
        with self.sequence():
            for _ in range(steps):
                self.plan_action(NoOp)


def serve(db: str) -> int:
    """Run one executor world until stdin closes."""
    world = World(db).start()
    print("ready", flush=True)
    sys.stdin.read()
    world.stop()
    return 0


def fresh_schema(admin: Any) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES else "?"
    return schema, f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"


def floor(admin: Any, commits: int) -> float:
    """Return the seconds of ``commits`` one-row insert + commit round trips."""
    import psycopg2

    schema, _ = fresh_schema(admin)
    connection = psycopg2.connect(POSTGRES)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE TABLE "{schema}".rows (id serial primary key, data text)')
        connection.commit()
        start = time.perf_counter()
        for index in range(commits):
            with connection.cursor() as cursor:
                cursor.execute(f'INSERT INTO "{schema}".rows (data) VALUES (%s)', (str(index),))
            connection.commit()
        return time.perf_counter() - start
    finally:
        connection.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')


def w1(admin: Any, executors: int, plans: int, steps: int) -> float:
    """Return W1's seconds with ``executors`` executor processes."""
    schema, url = fresh_schema(admin)
    World(url, executor=False, create=True).stop()
    World(url).stop()  # migrate once, before the executors start
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(executors)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with World(url, executor=False) as client, ThreadPoolExecutor(16) as callers:
            list(callers.map(lambda _: None, range(16)))  # threads up before the clock
            start = time.perf_counter()
            triggered = list(callers.map(lambda _: client.trigger(Chain, steps), range(plans)))
            ended = [t.wait(300) for t in triggered]
            elapsed = time.perf_counter() - start
        assert all(plan.result == "success" for plan in ended)
        return elapsed
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(60)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    import psycopg2

    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    changes = args.plans * args.steps
    rounds: dict[str, list[float]] = {"floor": [], "1 executor": [], "2 executors": []}
    for _ in range(args.repeat):
        rounds["floor"].append(floor(admin, changes))
        rounds["1 executor"].append(w1(admin, 1, args.plans, args.steps))
        rounds["2 executors"].append(w1(admin, 2, args.plans, args.steps))
    admin.close()
    base = statistics.median(rounds["floor"])
    results = {}
    for name, times in rounds.items():
        median = statistics.median(times)
        results[name] = {
            "seconds": round(median, 3),
            "per_s": round(changes / median),
            "x_floor": round(base / median, 2),
            "rounds": [round(t, 3) for t in times],
        }
        print(f"{name:12} {median:7.3f} s {changes / median:8,.0f}/s  {base / median:5.2f}x floor")
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    out = {"plans": args.plans, "steps": args.steps, "results": results}
    (RESULTS / f"pg-executors-{stamp}.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
