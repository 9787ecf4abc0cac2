"""Events from a client process to steps suspended in an executor process (p50/p99).

An executor world runs in a child process (this script with ``--serve``) on a fresh
database: a SQLite file in a temporary directory (default durability) and, when reachable,
a fresh PostgreSQL schema. This process opens a client world (``executor=False``),
triggers ``--n`` plans whose step suspends, waits until every step is ``suspended``, then
sends one event at a time: the latency is the time `World.event` takes to return, i.e.
until the executor process has stored the event and its reply is back. Baseline of the
same run: one row committed and read back by this process (``INSERT`` + ``COMMIT``), the
floor of any request through the database.

    .venv/bin/python bench/bench_client_events.py [--n 200] [--db sqlite|postgres|both]

Targets (issue "many processes"): p50 <= 20 ms on PostgreSQL, <= 100 ms on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydynflow import Action, World  # noqa: E402
from pydynflow.storage import Storage  # noqa: E402

POSTGRES = os.environ.get("PYDYNFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"


class Approve(Action):
    """A step that waits for one event."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend()
        self.output["event"] = event


def serve(db: str) -> int:
    """Run the executor world until stdin closes."""
    world = World(db, pool_size=5).start()
    print("ready", flush=True)
    sys.stdin.read()
    world.stop()
    return 0


def commit_floor(db: str, rounds: int = 200) -> float:
    """Return the median seconds of one one-row insert + commit, through `Storage`."""
    times = []
    with Storage(db, create=False) as storage:
        for index in range(rounds):
            start = time.perf_counter()
            storage.post_request("bench-floor", {"n": index})
            times.append(time.perf_counter() - start)
        storage.clear_inboxes(["bench-floor"])
    return statistics.median(times)


def measure(db: str, n: int) -> dict[str, Any]:
    """Return the event latencies of one database."""
    World(db).stop()  # create and migrate it
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        with World(db, executor=False) as client:
            triggered = [client.trigger(Approve) for _ in range(n)]
            deadline = time.monotonic() + 120
            while any(
                client.load(t.id).steps[2].state != "suspended" for t in triggered[-5:]
            ):  # the last ones suspended: the earlier ones did before (FIFO)
                if time.monotonic() > deadline:
                    raise RuntimeError("the steps did not suspend")
                time.sleep(0.05)  # the executor process works (noqa: sleep-ok)
            latencies = []
            for t in triggered:
                start = time.perf_counter()
                client.event(t.id, 2, {"go": True})
                latencies.append(time.perf_counter() - start)
            ended = [t.wait(120) for t in triggered]
            assert all(plan.result == "success" for plan in ended)
        floor = commit_floor(db)
    finally:
        child.stdin.close()
        child.wait(60)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "n": n,
        "p50_ms": round(p50 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "commit_floor_ms": round(floor * 1000, 3),
        "p50_over_floor": round(p50 / floor, 1),
    }


def postgres_schema() -> tuple[str, Any] | None:
    """Return a fresh schema's URL and an admin connection, or None if unreachable."""
    try:
        import psycopg2

        admin = psycopg2.connect(POSTGRES, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means: skip PostgreSQL
        print(f"PostgreSQL skipped: {exc}".strip())
        return None
    admin.autocommit = True
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES else "?"
    return f"{POSTGRES}{separator}options=-csearch_path%3D{schema}", (admin, schema)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    results: dict[str, Any] = {}
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as directory:
            results["sqlite"] = measure(f"sqlite:///{directory}/bench.db", args.n)
            print("sqlite", json.dumps(results["sqlite"]))
    if args.db in ("postgres", "both"):
        found = postgres_schema()
        if found is not None:
            url, (admin, schema) = found
            try:
                results["postgres"] = measure(url, args.n)
                print("postgres", json.dumps(results["postgres"]))
            finally:
                with admin.cursor() as cursor:
                    cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
                admin.close()
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"client-events-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
