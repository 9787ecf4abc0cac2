"""The writer's PostgreSQL transactions through psycopg2 and psycopg 3, in several ways.

The transactions are W1's: a W1 (200 plans x 10 no-op steps, 16 caller threads) runs first
on a fresh database with the writer on the world's thread, and the rows of each of its
transactions are recorded (``Storage.write_rows``' arguments, plus the ledger record every
transaction writes). Then, per round, each way below replays them all, one transaction
each, on a fresh database of the same server (the schema made by `Storage`), after the
floor of the round (one-row ``INSERT`` + ``COMMIT`` round trips, psycopg2,
``synchronous_commit=on``):

- ``psycopg2-before``: how the writer sent them until 2026-12-04: ``BEGIN``, a savepoint
  around the rows (``execute_batch`` per table) and one around the ledger record,
  ``COMMIT``: eight round trips.
- ``psycopg2-values``: one round trip, each table's rows in one ``VALUES (...), (...)``
  statement bound by psycopg2.
- ``psycopg2-json`` (the writer's way now: `pydynflow.storage.batch`): one round trip, each
  table's rows as one JSON parameter (``json_populate_recordset``).
- ``psycopg3-pipeline``: psycopg 3's pipeline mode, ``executemany`` per table (server-side
  binding, prepared after a few uses), ``BEGIN`` and ``COMMIT`` in the pipeline: one sync.
- ``psycopg3-pipeline-json``: the same pipeline with the JSON statements.

psycopg 3 is not a dependency of pydynflow: its ways run in a child process under
``--psycopg3-python`` (default ``bench/.venv-peers/bin/python``, which has it through DBOS;
skipped if that interpreter cannot import it). Reported per transaction: wall time, the
client's CPU and the server backend's CPU (from ``/proc``, same machine), medians over the
rounds, and the wall time in floor commits of the same round.

    .venv/bin/python bench/bench_pg_drivers.py [--repeat 5] [--sizes full|small] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

LEDGER_SQL = (
    'INSERT INTO "dynflow_coordinator_records" ("id", "class", "owner_id", "data") '
    'VALUES (%s, %s, %s, %s) ON CONFLICT ("id", "class") DO UPDATE SET "data" = excluded."data"'
)
KINDS = ("full_plans", "plans", "actions", "steps")  # write_rows' order
PSYCOPG2_WAYS = ("psycopg2-before", "psycopg2-values", "psycopg2-json")
PSYCOPG3_WAYS = ("psycopg3-pipeline", "psycopg3-pipeline-json")
TICK = os.sysconf("SC_CLK_TCK")
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"  # as bench_pg_w1's


def backend_cpu(pid: int) -> float:
    """Return the CPU seconds a server backend has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ledger_row(number: int) -> tuple[Any, ...]:
    """Return the ledger record a transaction writes (as the writer's `Ledger` does)."""
    return ("bench", "pydynflow.WriterLedger", None, json.dumps([number, [], {}]).encode())


# -- the transactions --------------------------------------------------------------------------


def record_w1(server: str, sizes: str = "full") -> dict[str, Any]:
    """Run W1 with the in-thread writer on a fresh database; return its transactions' rows
    and the SQL of each kind (one row, multi-row head and tail, JSON form)."""
    import bench_pg_w1
    import bench_workloads

    from pydynflow.storage import plans

    transactions: list[dict[str, list[tuple[Any, ...]]]] = []
    write_rows = plans.Plans.write_rows

    def recording(self: Any, **rows: Any) -> None:
        transactions.append({kind: [tuple(row) for row in rows.get(kind, ())] for kind in KINDS})
        write_rows(self, **rows)

    os.environ["PYDYNFLOW_PERSISTENCE"] = "thread"
    plans.Plans.write_rows = recording  # type: ignore[method-assign]
    try:
        with bench_pg_w1.fresh_database(server) as url:
            run = bench_workloads.w1(
                Path(tempfile.mkdtemp()), bench_workloads.SIZES[sizes], parallel=True, url=url
            )
    finally:
        plans.Plans.write_rows = write_rows  # type: ignore[method-assign]
        del os.environ["PYDYNFLOW_PERSISTENCE"]
    storage = _upserts()
    return {"transactions": transactions, "sql": storage, "w1_steps_per_s": run.rate}


def _upserts() -> dict[str, dict[str, str]]:
    from pydynflow.storage.batch import Upsert
    from pydynflow.storage.rows import ACTION_COLUMNS, PLAN_COLUMNS, PLAN_META_COLUMNS, STEP_COLUMNS
    from pydynflow.storage.sql import ACTIONS, PLANS, STEPS

    shapes = {
        "full_plans": (PLANS, PLAN_COLUMNS, ("uuid",)),
        "plans": (PLANS, PLAN_META_COLUMNS, ("uuid",)),
        "actions": (ACTIONS, ACTION_COLUMNS, ("execution_plan_uuid", "id")),
        "steps": (STEPS, STEP_COLUMNS, ("execution_plan_uuid", "id")),
    }
    sql = {}
    for kind, (table, columns, key) in shapes.items():
        upsert = Upsert(table, columns, key, "%s")
        sql[kind] = {
            "one": upsert.sql,
            "head": upsert._head,
            "row": upsert._row,
            "tail": upsert._tail,
            "json": upsert.json_sql,
            "columns": list(columns),
        }
    return sql


def json_document(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """Return rows as the JSON statements take them (as `pydynflow.storage.batch` does)."""

    def value(v: Any) -> str:
        if isinstance(v, bytes):
            return "\\x" + v.hex()
        if isinstance(v, dt.datetime):
            return v.isoformat()
        raise TypeError(type(v))

    return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=value)


# -- the ways (psycopg2 here; psycopg 3 in `replay_psycopg3`, run in a child) -------------------


def replay_psycopg2(way: str, url: str, data: dict[str, Any]) -> dict[str, float]:
    import psycopg2
    import psycopg2.extras

    from pydynflow.storage.batch import StatementBatch

    sql, transactions = data["sql"], data["transactions"]
    conn = psycopg2.connect(url)
    conn.autocommit = True  # as peewee runs it: BEGIN and COMMIT are the writer's
    cursor = conn.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    (pid,) = cursor.fetchone()
    server, client, start = backend_cpu(pid), time.process_time(), time.perf_counter()
    for number, rows in enumerate(transactions):
        if way == "psycopg2-before":
            cursor.execute("BEGIN")
            cursor.execute('SAVEPOINT "rows"')
            for kind in KINDS:
                if rows[kind]:
                    psycopg2.extras.execute_batch(cursor, sql[kind]["one"], rows[kind], 200)
            cursor.execute('RELEASE SAVEPOINT "rows"')
            cursor.execute('SAVEPOINT "ledger"')
            cursor.execute(LEDGER_SQL, ledger_row(number))
            cursor.execute('RELEASE SAVEPOINT "ledger"')
            cursor.execute("COMMIT")
            continue
        batch = StatementBatch(cursor)
        for kind in KINDS:
            if not rows[kind]:
                continue
            if way == "psycopg2-values":
                head, row, tail = (sql[kind][p] for p in ("head", "row", "tail"))
                statement = head + ", ".join([row] * len(rows[kind])) + tail
                batch.write(statement, [v for one in rows[kind] for v in one])
            else:
                document = json_document(sql[kind]["columns"], rows[kind])
                batch.write(sql[kind]["json"], (document,))
        batch.write(LEDGER_SQL, ledger_row(number))
        batch.commit()
    result = _figures(len(transactions), start, client, backend_cpu(pid) - server)
    conn.close()
    return result


def replay_psycopg3(way: str, url: str, data: dict[str, Any]) -> dict[str, float]:
    import psycopg

    sql, transactions = data["sql"], data["transactions"]
    conn = psycopg.connect(url, autocommit=True)
    cursor = conn.cursor()
    (pid,) = cursor.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
    server, client, start = backend_cpu(pid), time.process_time(), time.perf_counter()
    for number, rows in enumerate(transactions):
        with conn.pipeline():
            cursor.execute("BEGIN")
            for kind in KINDS:
                if not rows[kind]:
                    continue
                if way == "psycopg3-pipeline":
                    cursor.executemany(sql[kind]["one"], rows[kind])
                else:
                    document = json_document(sql[kind]["columns"], rows[kind])
                    cursor.execute(sql[kind]["json"].replace("%s)", "%s::json)"), (document,))
            cursor.execute(LEDGER_SQL, ledger_row(number))
            cursor.execute("COMMIT")
    result = _figures(len(transactions), start, client, backend_cpu(pid) - server)
    conn.close()
    return result


def _figures(count: int, start: float, client: float, server: float) -> dict[str, float]:
    return {
        "wall_ms": (time.perf_counter() - start) / count * 1e3,
        "client_cpu_ms": (time.process_time() - client) / count * 1e3,
        "server_cpu_ms": server / count * 1e3,
    }


def child_main(way: str, url: str, data_path: str) -> int:
    """Replay with psycopg 3 (run under ``--psycopg3-python``); print the figures as JSON."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        print(json.dumps({"error": f"no psycopg 3 here: {exc}"}))
        return 0
    with open(data_path, "rb") as source:
        data = pickle.load(source)  # this script's own file, written by its parent
    print(json.dumps(replay_psycopg3(way, url, data)))
    return 0


# -- the run ---------------------------------------------------------------------------------


def fresh_schema_database(server: str) -> Any:
    """Return a context manager: a fresh database with pydynflow's schema."""
    import contextlib

    import bench_pg_w1

    from pydynflow.storage import Storage

    @contextlib.contextmanager
    def made() -> Any:
        with bench_pg_w1.fresh_database(server, "pydynflow_drivers") as url:
            Storage(url).close()
            yield url

    return made()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PYDYNFLOW_BENCH_POSTGRES", DEFAULT_SERVER),
        help="server URL",
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians)")
    parser.add_argument("--sizes", choices=("full", "small"), default="full", help="W1's size")
    parser.add_argument(
        "--psycopg3-python", type=Path, default=HERE / ".venv-peers" / "bin" / "python"
    )
    parser.add_argument("--json", type=Path, help="default: bench/results/pg-drivers-<UTC>.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # way, url, data file
    args = parser.parse_args(argv)
    if args.child:  # under --psycopg3-python: no pydynflow there
        return child_main(*args.child)
    import bench_pg_w1

    created = dt.datetime.now(dt.UTC)
    print("recording W1's transactions ...", flush=True)
    data = record_w1(args.postgres, args.sizes)
    transactions = data["transactions"]
    rows = sum(len(t[kind]) for t in transactions for kind in KINDS)
    print(f"{len(transactions)} transactions, {rows / len(transactions):.1f} rows each")
    data_file = Path(tempfile.mkstemp(prefix="pydynflow-drivers-", suffix=".pickle")[1])
    data_file.write_bytes(pickle.dumps(data))
    ways = list(PSYCOPG2_WAYS)
    if args.psycopg3_python.exists():
        ways += PSYCOPG3_WAYS
    else:
        print(f"{args.psycopg3_python} is missing: psycopg 3 not measured (make bench-peers)")
    figures: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    floors: list[float] = []
    skipped: dict[str, str] = {}
    try:
        for round_ in range(1, args.repeat + 1):
            floor = bench_pg_w1.floor_single(args.postgres, 500 if args.sizes == "full" else 50)
            floors.append(floor.wall_s / floor.count * 1e3)
            print(f"  round {round_}: floor {floors[-1]:.3f} ms/commit", flush=True)
            for way in ways:
                if way in skipped:
                    continue
                with fresh_schema_database(args.postgres) as url:
                    if way in PSYCOPG2_WAYS:
                        result = replay_psycopg2(way, url, data)
                    else:
                        command = [str(args.psycopg3_python), __file__, "--child", way, url]
                        done = subprocess.run(
                            [*command, str(data_file)], capture_output=True, text=True
                        )
                        lines = done.stdout.strip().splitlines() or ["{}"]
                        result = json.loads(lines[-1])
                        if "error" in result or done.returncode:
                            skipped[way] = result.get("error") or done.stderr[-500:]
                            print(f"    {way}: not measured: {skipped[way]}")
                            continue
                figures[way].append(result)
                print(
                    f"    {way:<24} {result['wall_ms']:6.3f} ms/transaction, client CPU"
                    f" {result['client_cpu_ms']:.3f} ms, server CPU {result['server_cpu_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        data_file.unlink(missing_ok=True)
    floor_ms = statistics.median(floors)
    summary = {}
    print()
    print(f"floor: {floor_ms:.3f} ms per one-row commit (median of {len(floors)})")
    print(f"{'way':<24} {'wall ms':>8} {'x floor':>8} {'client CPU ms':>14} {'server CPU ms':>14}")
    for way, results in figures.items():
        if not results:
            continue
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        per_round = [r["wall_ms"] / f for r, f in zip(results, floors, strict=False)]
        summary[way] = {**median, "x_floor": median["wall_ms"] / floor_ms, "rounds": results}
        summary[way]["round_x_floor"] = per_round
        print(
            f"{way:<24} {median['wall_ms']:8.3f} {median['wall_ms'] / floor_ms:8.2f}"
            f" {median['client_cpu_ms']:14.3f} {median['server_cpu_ms']:14.3f}"
        )
    out = args.json or HERE / "results" / f"pg-drivers-{created:%Y%m%dT%H%MZ}.json"
    payload = {
        "created": created.isoformat(timespec="seconds"),
        "server": bench_pg_w1.server_settings(args.postgres),
        "transactions": len(transactions),
        "rows_per_transaction": rows / len(transactions),
        "repeat": args.repeat,
        "floor_ms": floor_ms,
        "floors_ms": floors,
        "ways": summary,
        "not_measured": skipped,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
