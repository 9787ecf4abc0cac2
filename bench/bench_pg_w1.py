"""W1 on PostgreSQL next to PostgreSQL's own one-row-commit floor, measured in the same run.

Every measurement runs on a fresh database (``CREATE DATABASE``, dropped afterwards) of the
server named by ``--postgres`` (default ``PYDYNFLOW_BENCH_POSTGRES``, else
``postgresql://postgres@127.0.0.1:5432/postgres``; the user must be allowed to create
databases), with the server's durability (``synchronous_commit=on``, read back and reported;
the run stops if it is anything else). Per round, in this order:

1. ``floor-single``: a bare psycopg2 connection, one ``INSERT ... ON CONFLICT`` of one step
   row per transaction, each its own ``COMMIT`` -> commits/s. The baseline of every ratio.
2. ``floor-batched``: the same changes, 64 per transaction (one multi-row statement) -> rows/s.
3. ``W1``: 200 plans x 10 sequential no-op steps on a started `World` (``pool_size=5``),
   triggered from 16 caller threads started before the clock, then all waited for
   (``bench_workloads.w1``: the same workload as on SQLite, every plan checked).
4. ``W1-pool32``: the same with 32 workers (more steps in flight, so bigger groups per commit).

Medians over ``--repeat`` rounds (default 3); each ratio is a median rate over the median
floor, and per round over that round's floor.

    .venv/bin/python bench/bench_pg_w1.py [--repeat 3] [--sizes full|small] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench_workloads  # noqa: E402
from bench_workloads import BenchFailure, Run, floor_rows, peak_rss_mb, settle  # noqa: E402

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = HERE / "results"
FLOOR_BATCH = bench_workloads.FLOOR_BATCH


def server_url() -> str:
    """Return the default server URL (its database is only used to create and drop others)."""
    return os.environ.get("PYDYNFLOW_BENCH_POSTGRES", DEFAULT_SERVER)


def database_url(server: str, name: str) -> str:
    """Return ``server`` with its database replaced by ``name``."""
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


DB_TAG_VARIABLE = "PYDYNFLOW_BENCH_DB_TAG"


@contextlib.contextmanager
def fresh_database(server: str, prefix: str = "pydynflow_bench") -> Iterator[str]:
    """Create an empty database on ``server``, yield its URL, drop it afterwards.

    Its name is ``<prefix>_<tag><12 hex digits>``, the tag taken from ``PYDYNFLOW_BENCH_DB_TAG``
    (empty by default): a caller that sets it can tell this run's databases from any other's
    on the same server.
    """
    import psycopg2

    name = f"{prefix}_{os.environ.get(DB_TAG_VARIABLE, '')}{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url(server, name)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def server_settings(url: str) -> dict[str, str]:
    """Return the server's version and the durability settings a new connection gets."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            found = {}
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method"):
                cursor.execute(f"SHOW {name}")
                found[name] = str(cursor.fetchone()[0])
        return found
    finally:
        conn.close()


def require_durable(url: str) -> dict[str, str]:
    """Return `server_settings`; BenchFailure unless commits are durable (on, fsync on)."""
    found = server_settings(url)
    if found["synchronous_commit"] != "on" or found["fsync"] != "on":
        raise BenchFailure(f"the server's commits are not durable: {found}")
    return found


UPSERT = (
    "INSERT INTO steps (plan_id, id, state, output) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (plan_id, id) DO UPDATE SET state = excluded.state, output = excluded.output"
)
CREATE = (
    "CREATE TABLE steps (plan_id TEXT, id INT, state TEXT, output BYTEA, PRIMARY KEY (plan_id, id))"
)


def floor_single(server: str, changes: int, steps_per_plan: int = 10) -> Run:
    """One durable single-row UPSERT per transaction, on a fresh database -> commits/s."""
    import psycopg2

    rows = floor_rows(changes, steps_per_plan)
    with fresh_database(server, "pydynflow_floor") as url:
        settings = require_durable(url)
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(CREATE)
            conn.commit()
            settle()
            start = time.perf_counter()
            with conn.cursor() as cursor:
                for row in rows:
                    cursor.execute(UPSERT, row)
                    conn.commit()
            wall = time.perf_counter() - start
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM steps")
                (stored,) = cursor.fetchone()
        finally:
            conn.close()
    if stored != len(rows):
        raise BenchFailure(f"floor-single stored {stored} rows, expected {len(rows)}")
    extra = {"commits": len(rows), **settings}
    return Run(wall, len(rows), peak_rss_mb(), 1, extra)


def floor_batched(server: str, changes: int, steps_per_plan: int = 10) -> Run:
    """The same changes, `FLOOR_BATCH` per transaction in one multi-row statement -> rows/s."""
    import psycopg2
    import psycopg2.extras

    rows = floor_rows(changes, steps_per_plan)
    with fresh_database(server, "pydynflow_floor") as url:
        conn = psycopg2.connect(url)
        commits = 0
        try:
            with conn.cursor() as cursor:
                cursor.execute(CREATE)
            conn.commit()
            settle()
            many = UPSERT.replace("(%s, %s, %s, %s)", "%s")
            start = time.perf_counter()
            with conn.cursor() as cursor:
                for first in range(0, len(rows), FLOOR_BATCH):
                    batch = rows[first : first + FLOOR_BATCH]
                    psycopg2.extras.execute_values(cursor, many, batch, page_size=FLOOR_BATCH)
                    conn.commit()
                    commits += 1
            wall = time.perf_counter() - start
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM steps")
                (stored,) = cursor.fetchone()
        finally:
            conn.close()
    if stored != len(rows):
        raise BenchFailure(f"floor-batched stored {stored} rows, expected {len(rows)}")
    return Run(wall, len(rows), peak_rss_mb(), 1, {"commits": commits})


def w1(server: str, size: dict[str, int], *, pool_size: int = 5) -> Run:
    """W1 (``bench_workloads.w1``) on a fresh database of ``server``."""
    with fresh_database(server) as url:
        require_durable(url)
        workdir = Path(tempfile.mkdtemp(prefix="pydynflow-pg-w1-"))
        try:
            return bench_workloads.w1(workdir, size, parallel=True, pool_size=pool_size, url=url)
        finally:
            with contextlib.suppress(OSError):
                workdir.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", default=server_url(), help="server URL (see above)")
    parser.add_argument("--sizes", choices=sorted(bench_workloads.SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--only", default="", help="comma-separated subset of the workloads")
    parser.add_argument("--json", type=Path, help="default: bench/results/pg-w1-<UTC>.json")
    args = parser.parse_args(argv)
    size = bench_workloads.SIZES[args.sizes]
    changes = size["floor_changes"]
    server = args.postgres
    workloads: list[tuple[str, str, Callable[[], Run]]] = [
        ("floor-single", "commits/s", lambda: floor_single(server, changes)),
        ("floor-batched", "rows/s", lambda: floor_batched(server, changes)),
        ("W1", "steps/s", lambda: w1(server, size)),
        ("W1-pool32", "steps/s", lambda: w1(server, size, pool_size=32)),
    ]
    if args.only:
        wanted = {"floor-single", *args.only.split(",")}
        workloads = [w for w in workloads if w[0] in wanted]
    created = dt.datetime.now(dt.UTC)
    settings = server_settings(server)
    print(
        f"PostgreSQL {settings['server_version']} at {urlsplit(server).netloc}: "
        f"synchronous_commit={settings['synchronous_commit']} fsync={settings['fsync']} "
        f"wal_sync_method={settings['wal_sync_method']}; load {os.getloadavg()[0]:.2f}; "
        f"W1 {size['w1_plans']} plans x {size['w1_steps']} steps; repeat {args.repeat}",
        flush=True,
    )
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in workloads}
    failure: BaseException | None = None
    try:
        for round_ in range(1, args.repeat + 1):
            for name, unit, measure in workloads:
                run = measure()
                runs[name].append(run)
                print(
                    f"  round {round_}: {name:<13} {run.wall_s:8.3f} s {run.rate:>10,.0f} {unit}",
                    flush=True,
                )
    except (BenchFailure, TimeoutError) as exc:
        failure = exc
        print(f"FAILED: {exc}", file=sys.stderr)
    floor_runs = runs["floor-single"]
    baseline = statistics.median(run.rate for run in floor_runs) if floor_runs else None
    results = [
        bench_workloads.summarise(name, unit, runs[name], baseline, floor_runs)
        for name, unit, _ in workloads
        if runs[name]
    ]
    print()
    bench_workloads.print_table(results)
    for r in results:
        if r.name.startswith("W1"):
            rounds = ", ".join(f"{x:.2f}" for x in r.extra["round_ratios"])
            commits = r.extra.get("commits")
            print(
                f"{r.name}: {r.ratio:.2f}x floor-single (per round: {rounds})"
                + ("" if commits is None else f"; {commits:.0f} commits per run (median)")
            )
    out = args.json or RESULTS / f"pg-w1-{created:%Y%m%dT%H%MZ}.json"
    payload = {
        "created": created.isoformat(timespec="seconds"),
        "server": {**settings, "address": urlsplit(server).netloc},
        "sizes": args.sizes,
        "size": size,
        "repeat": args.repeat,
        "ok": failure is None,
        "error": None if failure is None else str(failure),
        "results": {r.name: vars(r) for r in results},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
