"""Retention: delete 100,000 finished plans with `World.delete_plans` and report the longest
write transaction it held, next to inserting the same plans in the same run.

Per backend (SQLite file, WAL, ``synchronous=FULL``; PostgreSQL when reachable), on a fresh
database: one real plan (a root action and two children, each with a run step, an output and
an output chunk: 10 rows a plan) is run by a `World` and its rows cloned under new ids:

1. ``insert`` (the baseline): the plans to delete, ended two days ago, plus 10% recent
   stopped plans and 1% paused ones (both must be kept), 1,000 plans per transaction
   through `Storage.write_rows`; total time and longest transaction. PostgreSQL then gets
   an ``ANALYZE``, as autovacuum would have run while so many plans piled up.
2. ``delete``: a client world (``executor=False``, not started) calls
   ``delete_plans(older_than=timedelta(days=1))``; total time, number of transactions,
   longest / p99 / median transaction (`DeletedBatch.seconds`: ``BEGIN`` to ``COMMIT``).
   Meanwhile a probe thread commits a one-row write every 5 ms, as the engine's writer
   does, and its longest wait is reported next to its longest wait before the deletion.
3. checks: every old plan and every row of theirs is gone, the recent and paused ones kept.

With ``--backup`` the deletion also writes its JSON-lines backup (a second run per backend).

    .venv/bin/python bench/bench_retention.py [--plans 100000] [--sizes full|small]
        [--postgres URL | --no-postgres | --no-sqlite] [--backup] [--json PATH] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_workloads as workloads  # noqa: E402

from pydynflow import Action, World  # noqa: E402
from pydynflow.retention import DeletedBatch  # noqa: E402
from pydynflow.storage import Storage  # noqa: E402
from pydynflow.storage.rows import ACTION_COLUMNS, PLAN_COLUMNS, STEP_COLUMNS  # noqa: E402
from pydynflow.storage.sql import select_sql  # noqa: E402

POSTGRES = os.environ.get("PYDYNFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"full": 100_000, "small": 2_000}
INSERT_BATCH = 1_000
PROBE_EVERY = 0.005
CHUNK_COLUMNS = ("execution_plan_uuid", "action_id", "chunk", "kind", "timestamp")


class Part(Action):
    """A child: a run step with a small output and one output chunk."""

    def plan(self, index: int) -> None:
        self.plan_self({"index": index, "host": f"host-{index}.example.com"})

    def run(self) -> None:
        self.output["exit_status"] = 0
        self.output["stdout"] = f"deployed part {self.input['index']} in 12 ms"
        self.output_chunk(f"part {self.input['index']}: done", kind="stdout")


class Deploy(Action):
    """The root: two children, then its own run step."""

    def plan(self) -> None:
        self.plan_action(Part, 1)
        self.plan_action(Part, 2)
        self.plan_self({"release": "1.2.3"})

    def run(self) -> None:
        self.output["deployed"] = True
        self.output_chunk("release 1.2.3 deployed", kind="stdout")


@dataclass
class Template:
    """The rows of one finished plan, to be cloned under new ids."""

    plan: list[Any]
    actions: list[list[Any]]
    steps: list[list[Any]]
    chunks: list[list[Any]]

    @property
    def rows(self) -> int:
        return 1 + len(self.actions) + len(self.steps) + len(self.chunks)


@dataclass
class Run:
    """One backend's figures."""

    backend: str
    backup: bool
    plans_deleted: int
    plans_kept: int
    rows_per_plan: int
    insert_s: float
    insert_longest_txn_ms: float
    delete_s: float
    transactions: int
    longest_txn_ms: float
    p99_txn_ms: float
    median_txn_ms: float
    mean_batch: float
    probe_idle_max_ms: float
    probe_delete_max_ms: float
    probe_delete_p99_ms: float
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def template(url: str) -> Template:
    """Run one `Deploy` plan to the end on ``url`` and return its rows."""
    with World(url, plugins=False) as world:
        plan = world.trigger(Deploy).wait(60)
        assert plan.state == "stopped" and plan.result == "success", plan
    with Storage(url) as storage:
        cursor = storage.database.cursor()
        param = storage.database.param

        def rows(table: str, columns: tuple[str, ...], key: str) -> list[list[Any]]:
            cursor.execute(select_sql(table, columns) + f' WHERE "{key}" = {param}', (plan.id,))
            return [[_plain(value) for value in row] for row in cursor.fetchall()]

        found = Template(
            plan=rows("dynflow_execution_plans", PLAN_COLUMNS, "uuid")[0],
            actions=rows("dynflow_actions", ACTION_COLUMNS, "execution_plan_uuid"),
            steps=rows("dynflow_steps", STEP_COLUMNS, "execution_plan_uuid"),
            chunks=rows("dynflow_output_chunks", CHUNK_COLUMNS, "execution_plan_uuid"),
        )
        storage.delete_plans([plan.id])
    return found


def insert(storage: Storage, rows: Template, kinds: list[str]) -> tuple[float, float]:
    """Store one plan per entry of ``kinds`` (``old``, ``recent``, ``paused``), in
    transactions of `INSERT_BATCH`; return the total and the longest transaction."""
    now = datetime.now(UTC)
    dt = storage._dt  # how this dialect's columns take a time
    times = {
        "old": (dt(now - timedelta(days=2, seconds=1)), dt(now - timedelta(days=2))),
        "recent": (dt(now - timedelta(seconds=2)), dt(now - timedelta(seconds=1))),
        "paused": (dt(now - timedelta(days=3)), None),
    }
    param = storage.database.param
    chunk_sql = (
        'INSERT INTO "dynflow_output_chunks" ("execution_plan_uuid", "action_id", "chunk", '
        f'"kind", "timestamp") VALUES ({", ".join([param] * 5)})'
    )
    longest = 0.0
    started = time.perf_counter()
    for start in range(0, len(kinds), INSERT_BATCH):
        plans, actions, steps, chunks = [], [], [], []
        for kind in kinds[start : start + INSERT_BATCH]:
            plan_id = str(uuid.uuid4())
            row = [plan_id, *rows.plan[1:]]
            row[5], row[6] = times[kind]  # started_at, ended_at
            if kind == "paused":
                row[1], row[2] = "paused", "error"
            plans.append(tuple(row))
            actions.extend((plan_id, *action[1:]) for action in rows.actions)
            steps.extend((plan_id, *step[1:]) for step in rows.steps)
            chunks.extend((plan_id, *chunk[1:]) for chunk in rows.chunks)
        began = time.perf_counter()
        with storage.transaction():
            storage.write_rows(full_plans=plans, actions=actions, steps=steps)
            storage._executemany(storage.database.cursor(), chunk_sql, chunks)
        longest = max(longest, time.perf_counter() - began)
    return time.perf_counter() - started, longest


class Probe:
    """A thread that commits a one-row write every `PROBE_EVERY` seconds and records how
    long each took (what the engine's writer would wait behind a deletion)."""

    def __init__(self, url: str) -> None:
        self.storage = Storage(url, migrate=False)
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY):
            began = time.perf_counter()
            self.storage.put_record_data("bench.Probe", "probe", b"x")
            self.waits.append(time.perf_counter() - began)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.storage.close()


def count(storage: Storage, sql: str) -> int:
    cursor = storage.database.cursor()
    cursor.execute(sql)
    return int(cursor.fetchone()[0])


def one_run(backend: str, url: str, plans: int, backup: Path | None) -> Run:
    """Insert, delete and check on a fresh database at ``url``."""
    rows = template(url)
    recent, paused = plans // 10, max(plans // 100, 1)
    kinds = ["old"] * plans + ["recent"] * recent + ["paused"] * paused
    with Storage(url) as storage:
        insert_s, insert_longest = insert(storage, rows, kinds)
        if storage.dialect == "postgresql":  # what autovacuum does over the weeks plans pile up
            storage.database.execute_sql("ANALYZE")
    with Probe(url) as probe:  # before the deletion: what a write waits for anyway
        time.sleep(1.0)
        idle = list(probe.waits)
        probe.waits.clear()
        batches: list[DeletedBatch] = []
        world = World(url, executor=False, plugins=False)
        started = time.perf_counter()
        deleted = world.delete_plans(
            older_than=timedelta(days=1), backup=backup, progress=batches.append
        )
        delete_s = time.perf_counter() - started
        world.stop()
        during = list(probe.waits)
    with Storage(url) as storage:
        left = {
            table: count(storage, f'SELECT COUNT(*) FROM "{table}"')
            for table in (
                "dynflow_execution_plans",
                "dynflow_actions",
                "dynflow_steps",
                "dynflow_output_chunks",
            )
        }
        kept_paused = count(
            storage, "SELECT COUNT(*) FROM dynflow_execution_plans WHERE state = 'paused'"
        )
    kept = recent + paused
    checks = {
        "deleted every old plan": deleted == plans,
        "kept the recent and paused plans": left["dynflow_execution_plans"] == kept,
        "kept the paused plans": kept_paused == paused,
        "no rows of deleted plans left": left["dynflow_actions"] == kept * len(rows.actions)
        and left["dynflow_steps"] == kept * len(rows.steps)
        and left["dynflow_output_chunks"] == kept * len(rows.chunks),
    }
    if backup is not None:
        with backup.open(encoding="utf-8") as lines:
            checks["one backup line per deleted plan"] = sum(1 for _ in lines) == plans
    seconds = sorted(batch.seconds for batch in batches)
    return Run(
        backend=backend,
        backup=backup is not None,
        plans_deleted=deleted,
        plans_kept=kept,
        rows_per_plan=rows.rows,
        insert_s=round(insert_s, 3),
        insert_longest_txn_ms=round(insert_longest * 1000, 1),
        delete_s=round(delete_s, 3),
        transactions=len(batches),
        longest_txn_ms=round(seconds[-1] * 1000, 1),
        p99_txn_ms=round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000, 1),
        median_txn_ms=round(statistics.median(seconds) * 1000, 1),
        mean_batch=round(deleted / max(len(batches), 1), 1),
        probe_idle_max_ms=round(max(idle, default=0.0) * 1000, 1),
        probe_delete_max_ms=round(max(during, default=0.0) * 1000, 1),
        probe_delete_p99_ms=round(
            sorted(during)[min(len(during) - 1, int(len(during) * 0.99))] * 1000 if during else 0,
            1,
        ),
        checks=checks,
    )


def postgres_schema(url: str) -> tuple[str, Any] | None:
    """Return a URL on a fresh schema of ``url`` and the admin connection, or None."""
    try:
        import psycopg2

        admin = psycopg2.connect(url, connect_timeout=5)
    except Exception as exc:
        print(f"PostgreSQL not reachable ({type(exc).__name__}): skipped")
        return None
    admin.autocommit = True
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", (admin, schema)


def print_run(run: Run) -> None:
    what = f"{run.backend}{' + backup' if run.backup else ''}"
    print(
        f"{what:<20} insert {run.insert_s:7.2f} s (longest txn {run.insert_longest_txn_ms:6.1f} ms)"
        f" | delete {run.delete_s:7.2f} s in {run.transactions} txns, longest "
        f"{run.longest_txn_ms:6.1f} ms, p99 {run.p99_txn_ms:6.1f} ms, median "
        f"{run.median_txn_ms:5.1f} ms | probe write max {run.probe_idle_max_ms:5.1f} ms idle, "
        f"{run.probe_delete_max_ms:6.1f} ms during | {'ok' if run.ok else 'FAILED'}"
    )
    for name, passed in run.checks.items():
        if not passed:
            print(f"  FAILED: {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--plans", type=int, help="plans to delete (default: by --sizes)")
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL server URL")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--backup", action="store_true", help="also run with a backup file")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--dir", type=Path, help="where the temporary files go")
    args = parser.parse_args(argv)
    plans = args.plans or SIZES[args.sizes]
    workdir = Path(tempfile.mkdtemp(prefix="bench-retention-", dir=args.dir))
    info = workloads.machine(workdir)
    print(f"machine: nproc={info['nproc']} sqlite={info['sqlite']} fs={info['filesystem']}")
    print(f"{plans:,} plans to delete, +10% recent and +1% paused to keep")
    runs: list[Run] = []
    try:
        for with_backup in (False, True) if args.backup else (False,):
            tag = "backup" if with_backup else "plain"
            url = f"sqlite:///{workdir / f'{tag}.db'}"
            backup = workdir / f"sqlite-{tag}.jsonl" if with_backup else None
            if not args.no_sqlite:
                runs.append(one_run("sqlite", url, plans, backup))
                print_run(runs[-1])
            if args.no_postgres:
                continue
            found = postgres_schema(args.postgres)
            if found is None:
                continue
            pg_url, (admin, schema) = found
            try:
                backup = workdir / f"postgres-{tag}.jsonl" if with_backup else None
                runs.append(one_run("postgresql", pg_url, plans, backup))
                print_run(runs[-1])
            finally:
                with admin.cursor() as cursor:
                    cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
                admin.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(run.ok for run in runs)
    report = {
        "machine": info,
        "plans": plans,
        "insert_batch": INSERT_BATCH,
        "ok": ok,
        "runs": [{**asdict(run), "ok": run.ok} for run in runs],
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
