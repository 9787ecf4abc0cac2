"""The console's plan list with 100,000 stored plans: how long the page takes to answer, on
SQLite and PostgreSQL, with the indexes of schema migration 6 and without them (the baseline,
measured in the same run on the same rows), next to the floor of reading 50 plan rows by
primary key.

The plans are clones of one planned `Release` (a root action and three run steps), written
as rows: states and results drawn like a busy installation's (85% stopped, most of them
successes; some paused, running, planned, scheduled), labels ``release <app>-<n>``, start
times over 30 days, five root action classes. Each view is requested through the console
app in this process (``httpx`` against the ASGI app, logged in), ``--repeat`` times; the
median is reported, and the worst view must answer in <= 300 ms (exit 1 otherwise).

    .venv/bin/python bench/bench_console.py [--plans 100000] [--db sqlite|postgres|both]
        [--postgres URL] [--repeat 5] [--json PATH] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from pydynflow import Action, World  # noqa: E402
from pydynflow.storage import Storage  # noqa: E402
from pydynflow.storage.listing import PlanQuery  # noqa: E402
from pydynflow.storage.migrations import MIGRATION_6_INDEXES  # noqa: E402
from pydynflow.storage.sql import ACTIONS, PLANS, STEPS  # noqa: E402
from pydynflow.web import create_app  # noqa: E402

TARGET_MS = 300.0
TOKEN = "bench-token"
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
VIEWS: dict[str, str] = {
    "default (not stopped, newest first)": "/",
    "all plans": "/?state=any",
    "stopped, newest first": "/?state=stopped",
    "result error": "/?state=any&result=error",
    "paused, oldest first": "/?state=paused&order=started_at&dir=asc",
    "search label": "/?state=any&q=web-12",
    "action class": "/?state=any&action={deploy}",
    "sorted by label": "/?state=any&order=label&dir=asc",
    "sorted by end": "/?state=any&order=ended_at",
    "page 100 of stopped": "/?state=stopped&page=100",
    "last page of all": "/?state=any&page=last",
}


class Step(Action):
    """A run step of the template."""

    def plan(self, name: str) -> None:
        self.plan_self({"name": name, "notes": "x" * 200})

    def run(self) -> None:
        self.output["done"] = True


class Release(Action):
    """The template: build, test, deploy in sequence."""

    def plan(self, app: str) -> None:
        with self.sequence():
            for name in ("build", "test", "deploy"):
                self.plan_action(Step, name)
        self.plan_self({"app": app})


class DeployApp(Release):
    """A second root class (the action-class filter picks it)."""


class Rollback(Release):
    """Another root class."""


class Migrate(Release):
    """Another root class."""


class Backup(Release):
    """Another root class."""


ROOTS = [Release, DeployApp, Rollback, Migrate, Backup]
STATES = [  # (state, result, weight)
    ("stopped", "success", 80),
    ("stopped", "warning", 2),
    ("stopped", "error", 3),
    ("paused", "error", 5),
    ("running", "pending", 5),
    ("planned", "pending", 3),
    ("scheduled", "pending", 2),
]


def _template(url: str) -> dict[str, Any]:
    """Plan one `Release` through a client world; return its rows."""
    with World(url, executor=False, plugins=False, create=True) as world:
        plan = world.plan(Release, "web-1")
    with Storage(url) as storage:
        db = storage.database
        plan_row = db.execute_sql(f'SELECT * FROM "{PLANS}" WHERE uuid = {db.param}', (plan.id,))
        columns = [d[0] for d in plan_row.description]
        row = plan_row.fetchone()
        actions = db.execute_sql(
            f'SELECT * FROM "{ACTIONS}" WHERE execution_plan_uuid = {db.param} ORDER BY id',
            (plan.id,),
        )
        action_columns = [d[0] for d in actions.description]
        action_rows = actions.fetchall()
        db.execute_sql(
            f'DELETE FROM "{ACTIONS}" WHERE execution_plan_uuid = {db.param}', (plan.id,)
        )
        db.execute_sql(f'DELETE FROM "{PLANS}" WHERE uuid = {db.param}', (plan.id,))
    return {
        "plan_columns": columns,
        "plan": row,
        "action_columns": action_columns,
        "actions": action_rows,
    }


def _time_ordered_id(moment: datetime, rng: random.Random) -> str:
    value = int(moment.timestamp() * 1000) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    return str(uuid.UUID(int=value | 0b10 << 62 | rng.getrandbits(62)))


def populate(url: str, plans: int, seed: int = 7) -> None:
    """Store ``plans`` clones of the template, with varied states, labels and times."""
    template = _template(url)
    rng = random.Random(seed)
    weights = [weight for _, _, weight in STATES]
    now = datetime.now(UTC).replace(tzinfo=None)
    plan_columns, action_columns = template["plan_columns"], template["action_columns"]
    index = {name: i for i, name in enumerate(plan_columns)}
    class_at = action_columns.index("class")
    with Storage(url) as storage:
        db = storage.database
        sqlite = storage.dialect == "sqlite"
        param = db.param
        plan_sql = (
            f'INSERT INTO "{PLANS}" ({_names(plan_columns)}) '
            f"VALUES ({', '.join([param] * len(plan_columns))})"
        )
        action_sql = (
            f'INSERT INTO "{ACTIONS}" ({_names(action_columns)}) '
            f"VALUES ({', '.join([param] * len(action_columns))})"
        )
        step_sql = (
            f'INSERT INTO "{STEPS}" (execution_plan_uuid, id, action_id, state, phase, '
            f"started_at, ended_at, real_time, execution_time, progress_done, progress_weight, "
            f"attempts, retries, queue, action_class) VALUES ({', '.join([param] * 15)})"
        )
        batch = 2000
        for start in range(0, plans, batch):
            plan_rows, action_rows, step_rows = [], [], []
            for n in range(start, min(plans, start + batch)):
                state, result = rng.choices(STATES, weights)[0][:2]
                root = ROOTS[n % len(ROOTS)]
                created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
                plan_id = _time_ordered_id(created, rng)
                started = None if state == "scheduled" else created
                ended = (
                    created + timedelta(seconds=rng.uniform(1, 600)) if state == "stopped" else None
                )
                row = list(template["plan"])
                row[index["uuid"]] = plan_id
                row[index["state"]] = state
                row[index["result"]] = result
                row[index["label"]] = f"release {rng.choice(['web', 'api', 'db', 'cache'])}-{n}"
                row[index["started_at"]] = _at(started, sqlite)
                row[index["ended_at"]] = _at(ended, sqlite)
                row[index["real_time"]] = (ended - created).total_seconds() if ended else None
                plan_rows.append(tuple(row))
                for action in template["actions"]:
                    cloned = list(action)
                    cloned[0] = plan_id
                    if cloned[1] == 1:
                        cloned[class_at] = root.class_name()
                    action_rows.append(tuple(cloned))
                if state != "scheduled" and state != "planned":
                    for step_id in (2, 3, 4):
                        step_state = "success" if state == "stopped" else "pending"
                        step_rows.append(
                            (
                                plan_id,
                                step_id + 3,
                                step_id,
                                step_state,
                                "run",
                                _at(started, sqlite),
                                _at(ended, sqlite),
                                0.1,
                                0.1,
                                1.0,
                                1,
                                1,
                                0,
                                "default",
                                Step.class_name(),
                            )
                        )
            with storage.transaction():
                cursor = db.cursor()
                storage._executemany(cursor, plan_sql, plan_rows)
                storage._executemany(cursor, action_sql, action_rows)
                storage._executemany(cursor, step_sql, step_rows)
        if not sqlite:
            db.execute_sql(f'VACUUM ANALYZE "{PLANS}"')
            db.execute_sql(f'VACUUM ANALYZE "{ACTIONS}"')
            db.execute_sql(f'VACUUM ANALYZE "{STEPS}"')
        else:
            db.execute_sql("ANALYZE")


def _names(columns: list[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _at(moment: datetime | None, sqlite: bool) -> Any:
    if moment is None:
        return None
    return moment.isoformat(sep=" ", timespec="microseconds") if sqlite else moment


def drop_migration_6_indexes(url: str) -> None:
    """Remove what migration 6 added (the baseline: the schema of migration 5's indexes)."""
    with Storage(url) as storage:
        db = storage.database
        for name, _ in MIGRATION_6_INDEXES:
            db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        for _, ddl in _SCHEMA_5_PLAN_INDEXES:
            db.execute_sql(ddl)
        db.execute_sql("ANALYZE")


_SCHEMA_5_PLAN_INDEXES = [
    (name, f'CREATE INDEX IF NOT EXISTS "{name}" ON "{PLANS}" ("{column}")')
    for name, column in (
        ("dynflow_execution_plans_state", "state"),
        ("dynflow_execution_plans_result", "result"),
        ("dynflow_execution_plans_started_at", "started_at"),
        ("dynflow_execution_plans_ended_at", "ended_at"),
    )
]


def floor_ms(url: str, repeat: int) -> float:
    """Return the median time to read 50 plan rows by primary key (no filter, no sort)."""
    with Storage(url) as storage:
        db = storage.database
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            rows = db.execute_sql(
                f'SELECT uuid, state, result, label, started_at, ended_at FROM "{PLANS}" '
                f"ORDER BY uuid LIMIT 50"
            ).fetchall()
            times.append((time.perf_counter() - start) * 1000)
            assert len(rows) == 50
        return statistics.median(times)


async def _measure_views(url: str, repeat: int) -> dict[str, float]:
    app = create_app(db=url, token=TOKEN)
    results: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        login = await client.get("/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        done = await client.post("/login", data={"token": TOKEN, "csrf": csrf})
        assert done.status_code == 303, done.text
        for name, path in VIEWS.items():
            path = path.format(deploy=DeployApp.class_name())
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                response = await client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{name}: {path} answered {response.status_code}")
                if "plan-row" not in response.text and "page=" not in path:
                    raise SystemExit(f"{name}: {path} listed no plan")
            results[name] = statistics.median(times)
    return results


def measure_views(url: str, repeat: int) -> dict[str, float]:
    """Return the median ms of each view of `VIEWS` through the console app."""
    return asyncio.run(_measure_views(url, repeat))


def run_database(kind: str, url: str, plans: int, repeat: int) -> dict[str, Any]:
    """Populate ``url`` and measure every view with migration 6's indexes, then without."""
    start = time.perf_counter()
    populate(url, plans)
    print(f"  {kind}: {plans:,} plans stored in {time.perf_counter() - start:.1f} s")
    with Storage(url) as storage:
        total = storage.list_plans(PlanQuery(limit=1)).total
    floor = floor_ms(url, repeat * 4)
    indexed = measure_views(url, repeat)
    drop_migration_6_indexes(url)
    baseline = measure_views(url, repeat)
    print(f"  {kind}: floor (50 rows by primary key) {floor:.2f} ms; {total:,} plans stored")
    print(f"    {'view':40} {'migration 6':>12} {'without':>10}")
    for name in VIEWS:
        print(f"    {name:40} {indexed[name]:10.1f} ms {baseline[name]:8.1f} ms")
    worst = max(indexed.values())
    print(f"  {kind}: worst view {worst:.1f} ms (target <= {TARGET_MS:.0f} ms)")
    return {"floor_ms": floor, "indexed_ms": indexed, "baseline_ms": baseline, "worst_ms": worst}


def _postgres_schema_url(base: str) -> tuple[str, Any]:
    import psycopg2

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}", (admin, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres", default=os.environ.get("PYDYNFLOW_TEST_POSTGRES") or POSTGRES_DEFAULT
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-bench-console-", dir=args.dir))
    report: dict[str, Any] = {"plans": args.plans, "repeat": args.repeat, "target_ms": TARGET_MS}
    print(f"console plan list: {args.plans:,} plans, median of {args.repeat} requests per view")
    try:
        if args.db in ("sqlite", "both"):
            url = f"sqlite:///{workdir / 'console.db'}"
            report["sqlite"] = run_database("sqlite", url, args.plans, args.repeat)
        if args.db in ("postgres", "both"):
            url, (admin, schema) = _postgres_schema_url(args.postgres)
            try:
                report["postgres"] = run_database("postgres", url, args.plans, args.repeat)
            finally:
                with admin.cursor() as cursor:
                    cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
                admin.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    worst = max(report[kind]["worst_ms"] for kind in ("sqlite", "postgres") if kind in report)
    report["ok"] = worst <= TARGET_MS
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
