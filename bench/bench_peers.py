"""W1-W4 side by side: pydynflow, DBOS and OpenStack taskflow, in one run, on one machine.

Each engine is durable on SQLite with no server, a fresh database file per measured run:
pydynflow with its defaults (WAL, ``synchronous=FULL``), DBOS (SQLite system database) and
taskflow (SQLAlchemy persistence backend) with theirs (rollback journal, ``synchronous=FULL``;
the settings in force are read back and reported). Every measured run is its own process, so
that peak RSS (``ru_maxrss``) is that run's: pydynflow's under this interpreter (the project's
``.venv``), the peers' under ``bench/.venv-peers`` (built by ``make bench-peers``, never a
dependency of the package). The workers are in ``bench/peers/``; each prints one JSON line.

Workloads (DESIGN.md), run in this order, every engine and every variant of a workload one
after another before the next workload, so that the runs compared are close in time:

- W1: 200 workflows x 10 sequential no-op steps, all started at once, then all awaited.
- W2: one workflow, 1,000 concurrent no-op steps, then a join step.
- W3: 100 workflows: a step, 5 concurrent steps sleeping 10 ms, a step.
- W4: N workflows each waiting for an external event, all waiting at once, then every event
  delivered: N = 1,000 for all engines (DBOS is capped at 1,000: its sync variant holds a
  thread per waiting workflow); ``W4-10k``: DESIGN.md's 10,000, pydynflow only.

A "variant" is one way an engine's documentation offers to submit the workload (e.g. DBOS
sync or async workflows); every variant is measured and the ratios compare pydynflow's
fastest with each peer's fastest. The raw SQLite floor (one durable single-row commit per
transaction, WAL and rollback journal) is measured before and after every round, and W1 is
also reported as a ratio of it (the WAL floor).

``--db postgres``: every engine on PostgreSQL instead, the server ``--postgres`` names
(default ``PYDYNFLOW_BENCH_POSTGRES``, else ``postgresql://postgres@127.0.0.1:5432/postgres``;
the user must be allowed to create databases), a fresh database per measured run
(``CREATE DATABASE``, dropped after it), with the server's durability
(``synchronous_commit=on``, read back and reported): pydynflow through psycopg2, DBOS with it
as its system database (``system_database_url``, DBOS's home database). The floor is then
PostgreSQL's own: a psycopg2 loop of one-row ``INSERT ... ON CONFLICT`` + ``COMMIT``
(`bench_pg_w1.floor_single`), before and after every round. taskflow is not run there (see
`TASKFLOW_ON_POSTGRES`).

    .venv/bin/python bench/bench_peers.py [--db sqlite|postgres] [--sizes full|small]
        [--repeat 1] [--engines pydynflow,dbos,taskflow] [--workloads W1,W2,W3,W4,W4-10k]
        [--json PATH]

Writes ``bench/results/peers-<UTC timestamp>.json`` (``peers-pg-...`` on PostgreSQL) unless
``--json`` names another file. Exit code 1 if a measured run failed (its row says so), 2 for
a usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(HERE / "peers")]

import bench_pg_w1  # noqa: E402
import bench_workloads  # noqa: E402
from common import SIZES, WORKLOADS  # noqa: E402

ENGINES = ("pydynflow", "dbos", "taskflow")
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
RESULTS = HERE / "results"
WORKER_TIMEOUT = 3_600.0  # seconds per measured run
NAMES = {"pydynflow": "pydynflow", "dbos": "DBOS", "taskflow": "taskflow"}
CLAIM_MIN_RATIO = {("dbos", "W1"): 10.0, ("dbos", "W2"): 10.0}  # the acceptance
W1_MIN_X_FLOOR = 3.0  # pydynflow's W1 against the one-row-commit floor (issue 22)
FLOORS = {"sqlite": ("wal", "delete"), "postgres": ("postgres",)}
"""The floors measured per database (the first is the one W1 is compared with)."""
TASKFLOW_ON_POSTGRES = (
    "not run on PostgreSQL: its SQL backend would need a PostgreSQL driver of its own in the"
    " peers' virtualenv, and on SQLite it is two orders of magnitude behind (minutes a"
    " workload), so the comparison that matters there is DBOS, whose home database it is"
)


# -- running the workers --------------------------------------------------------------------


def worker_command(engine: str, python: Path) -> list[str]:
    interpreter = sys.executable if engine == "pydynflow" else str(python)
    return [interpreter, str(HERE / "peers" / f"{engine}_worker.py")]


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def call_worker(command: list[str], timeout: float) -> dict[str, Any]:
    """Run one worker; return its JSON record (or a failure record built here)."""
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "ok": False,
            "error": f"timed out after {timeout:.0f} s",
            "stderr": str(exc)[-2000:],
        }
    record = last_json_line(done.stdout)
    if record is None:
        return {
            "ok": False,
            "error": f"worker exited {done.returncode} without a result",
            "stderr": (done.stderr or done.stdout)[-2000:],
        }
    if not record.get("ok"):
        record["stderr"] = done.stderr[-2000:]
    return record


def list_variants(engine: str, python: Path) -> dict[str, Any]:
    command = [*worker_command(engine, python), "--workload", "W1", "--dir", "/", "--list"]
    record = call_worker(command, 300)
    if "variants" not in record:
        raise SystemExit(
            f"cannot list the variants of {engine}: {record.get('error')}\n"
            f"{record.get('stderr', '')}"
        )
    return record


# -- the raw SQLite floor ---------------------------------------------------------------------


def floor(workdir: Path, changes: int, journal: str, server: str = "") -> dict[str, Any]:
    """One durable single-row UPSERT per transaction (synchronous=FULL) -> commits/s.

    ``journal`` "postgres": PostgreSQL's (``synchronous_commit=on``) on a fresh database of
    ``server``.
    """
    if journal == "postgres":
        run = bench_pg_w1.floor_single(server, changes)
        return {"journal_mode": "postgres", "commits_per_s": run.rate, "wall_s": run.wall_s}
    if journal == "wal":
        run = bench_workloads.floor_single(workdir, {"floor_changes": changes, "w1_steps": 10})
        return {"journal_mode": "wal", "commits_per_s": run.rate, "wall_s": run.wall_s}
    path = bench_workloads.fresh_db(workdir, "floor-delete")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE steps (plan_id TEXT, id INT, state TEXT, output BLOB,"
            " PRIMARY KEY (plan_id, id))"
        )
        rows = bench_workloads.floor_rows(changes, 10)
        start = time.perf_counter()
        for row in rows:
            conn.execute("BEGIN")
            conn.execute(bench_workloads.UPSERT, row)
            conn.execute("COMMIT")
        wall = time.perf_counter() - start
    finally:
        conn.close()
    return {"journal_mode": "delete", "commits_per_s": changes / wall, "wall_s": wall}


# -- summary ----------------------------------------------------------------------------------


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the runs by (workload, engine, variant): medians of wall and rate, max RSS."""
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for record in records:
        key = (record["workload"], record["engine"], record.get("variant"))
        groups.setdefault(key, []).append(record)
    rows = []
    for (workload, engine, variant), runs in groups.items():
        first = runs[0]
        row: dict[str, Any] = {
            "workload": workload,
            "engine": engine,
            "variant": variant,
            "label": first.get("label"),
            "reference": bool(first.get("reference")),
            "status": first.get("status", "measured"),
            "note": first.get("note"),
            "rounds": len(runs),
        }
        failed = [r for r in runs if not r.get("ok")]
        measured = [r for r in runs if r.get("ok") and r.get("measured", True)]
        if failed:
            row["status"] = "failed"
            row["error"] = failed[0].get("error")
        if measured and not failed:
            row.update(
                n=first.get("n"),
                steps=first["steps"],
                wall_s=statistics.median(r["wall_s"] for r in measured),
                steps_per_s=statistics.median(r["steps_per_s"] for r in measured),
                peak_rss_mb=max(r["peak_rss_mb"] for r in measured),
                threads=max(r.get("threads", 0) for r in measured),
                os_threads=max(r.get("os_threads", -1) for r in measured),
                durability=first.get("durability"),
                walls=[r["wall_s"] for r in measured],
                extra=first.get("extra", {}),
            )
        rows.append(row)
    return rows


def best(
    rows: list[dict[str, Any]], workload: str, engine: str, *, reference: bool = False
) -> dict[str, Any] | None:
    """Return the fastest row of an engine on a workload (reference variants only if asked)."""
    timed = [
        r
        for r in rows
        if r["workload"] == workload
        and r["engine"] == engine
        and "wall_s" in r
        and (reference or not r["reference"])
    ]
    return min(timed, key=lambda r: r["wall_s"]) if timed else None


def add_ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each timed row's wall / pydynflow's fastest wall on the same workload; and per peer,
    its fastest variant against pydynflow's fastest."""
    ratios: dict[str, Any] = {}
    for workload in WORKLOADS:
        ours = best(rows, workload, "pydynflow")
        if ours is None:
            continue
        for row in rows:
            if row["workload"] == workload and "wall_s" in row:
                row["x_pydynflow"] = row["wall_s"] / ours["wall_s"]
        for engine in ENGINES[1:]:
            theirs = best(rows, workload, engine)
            if theirs is not None:
                ratios[f"{engine}/{workload}"] = {
                    "ratio": theirs["wall_s"] / ours["wall_s"],
                    "peer_variant": theirs["variant"],
                    "pydynflow_variant": ours["variant"],
                    "peer_wall_s": theirs["wall_s"],
                    "pydynflow_wall_s": ours["wall_s"],
                }
                fastest = best(rows, workload, engine, reference=True)
                if fastest is not None and fastest is not theirs:
                    ratios[f"{engine}/{workload}"]["reference"] = {
                        "ratio": fastest["wall_s"] / ours["wall_s"],
                        "peer_variant": fastest["variant"],
                        "peer_wall_s": fastest["wall_s"],
                    }
    return ratios


def claims(
    rows: list[dict[str, Any]], ratios: dict[str, Any], floor_rate: float | None = None
) -> list[dict[str, Any]]:
    """The issue's acceptance: ahead of every peer wherever it has the feature; >= 10x
    against DBOS on W1 and W2; W1 >= 3x the one-row-commit floor of the run."""
    out = []
    ours = best(rows, "W1", "pydynflow")
    if ours is not None and floor_rate:
        measured = ours["steps_per_s"] / floor_rate
        out.append(
            {
                "claim": f"pydynflow W1 >= {W1_MIN_X_FLOOR:g}x the one-row-commit floor",
                "engine": "pydynflow",
                "workload": "W1",
                "required": W1_MIN_X_FLOOR,
                "measured": measured,
                "met": measured >= W1_MIN_X_FLOOR,
            }
        )
    for key, value in ratios.items():
        engine, workload = key.split("/")
        need = CLAIM_MIN_RATIO.get((engine, workload), 1.0)
        out.append(
            {
                "claim": f"pydynflow {f'>= {need:g}x' if need > 1 else 'ahead of'} "
                f"{NAMES[engine]} on {workload}",
                "engine": engine,
                "workload": workload,
                "required": need,
                "measured": value["ratio"],
                "met": value["ratio"] >= need if need > 1 else value["ratio"] > 1.0,
            }
        )
    return out


# -- report -----------------------------------------------------------------------------------


def fmt_row(row: dict[str, Any], size: dict[str, int]) -> list[str]:
    name = NAMES[row["engine"]]
    variant = (row.get("variant") or "-") + (" (reference)" if row.get("reference") else "")
    if row["status"] == "failed":
        return [row["workload"], name, variant, f"FAILED: {row.get('error')}", "", "", "", "", ""]
    if "wall_s" not in row:
        return [
            row["workload"],
            name,
            variant,
            row.get("note") or row["status"],
            "-",
            "-",
            "-",
            "-",
            "-",
        ]
    threads = f"{row['threads']:,}" if row["workload"].startswith("W4") else "-"
    ratio = row.get("x_pydynflow")
    return [
        row["workload"],
        name,
        variant,
        shape(row, size),
        f"{row['wall_s']:.3f}",
        f"{row['steps_per_s']:,.0f}",
        f"{row['peak_rss_mb']:.1f}",
        threads,
        "" if ratio is None else f"{ratio:.2f}",
    ]


def shape(row: dict[str, Any], size: dict[str, int]) -> str:
    """Return "workflows x steps" (W1-W3) or the number of waiting workflows (W4)."""
    workload = row["workload"]
    if workload == "W1":
        return f"{size['w1_plans']:,} x {size['w1_steps']}"
    if workload == "W2":
        return f"1 x ({size['w2_steps']:,} + 1)"
    if workload == "W3":
        return f"{size['w3_plans']:,} x (1 + {size['w3_fanout']} + 1)"
    return f"{row['n']:,} waiting" if row.get("n") else ""


HEADER = [
    "workload",
    "engine",
    "variant",
    "workflows x steps",
    "wall s",
    "steps/s",
    "peak RSS MiB",
    "threads while waiting",
    "x pydynflow (time)",
]


def markdown_table(rows: list[dict[str, Any]], size: dict[str, int]) -> str:
    order = {w: i for i, w in enumerate(WORKLOADS)}
    engines = {e: i for i, e in enumerate(ENGINES)}
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 6) + "|"]
    for row in sorted(rows, key=lambda r: (order[r["workload"]], engines[r["engine"]])):
        cells = fmt_row(row, size)
        if "wall_s" not in row and row["status"] != "failed":
            cells = cells[:3] + [cells[3]] + [""] * 5  # the reason instead of a number
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(workdir: Path) -> dict[str, Any]:
    info: dict[str, Any] = bench_workloads.machine(workdir)
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    info.update(cpu=cpu, mem_gib=round(mem_kb / 2**20, 1), loadavg=os.getloadavg())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        info["commit"] = "?"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=sorted(FLOORS), default="sqlite")
    parser.add_argument("--postgres", default=bench_pg_w1.server_url(), help="server URL")
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (medians); default 1")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    parser.add_argument("--json", type=Path, help="default: bench/results/peers-<UTC>.json")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    parser.add_argument("--timeout", type=float, default=WORKER_TIMEOUT, help="s per run")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if unknown := sorted(set(engines) - set(ENGINES)) + sorted(set(workloads) - set(WORKLOADS)):
        parser.error(f"unknown engines/workloads: {unknown}")
    engines = [e for e in ENGINES if e in engines]
    workloads = [w for w in WORKLOADS if w in workloads]
    postgres = args.db == "postgres"
    skipped = {"taskflow"} if postgres else set()
    if any(e not in ("pydynflow", *skipped) for e in engines) and not args.peers_python.exists():
        print(
            f"{args.peers_python} is missing: `make bench-peers` builds bench/.venv-peers "
            "(or pass --engines pydynflow)",
            file=sys.stderr,
        )
        return 2
    size = SIZES[args.sizes]
    created = dt.datetime.now(dt.UTC)
    name = "peers-pg" if postgres else "peers"
    out = args.json or RESULTS / f"{name}-{created:%Y%m%dT%H%M%SZ}.json"
    listed = {e: list_variants(e, args.peers_python) for e in engines if e not in skipped}
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-peers-", dir=args.dir))
    info = machine(workdir)
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']} GiB, python "
        f"{info['python']}, sqlite {info['sqlite']}, {info['platform']}; databases in "
        f"{workdir} ({info['filesystem']}); load {info['loadavg'][0]:.2f}; commit {info['commit']}"
    )
    versions: dict[str, Any] = {}
    if postgres:
        info["postgres"] = bench_pg_w1.server_settings(args.postgres)
        info["postgres"]["address"] = urlsplit(args.postgres).netloc
        print(
            f"PostgreSQL {info['postgres']['server_version']} at {info['postgres']['address']}:"
            f" synchronous_commit={info['postgres']['synchronous_commit']},"
            f" fsync={info['postgres']['fsync']}; a fresh database per measured run"
        )
    print(
        f"db={args.db} sizes={args.sizes} repeat={args.repeat} engines={','.join(engines)} "
        f"workloads={','.join(workloads)}; W4 N={size['w4_n']:,}, W4-10k N={size['w4_big_n']:,}",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for round_ in range(1, args.repeat + 1):
            for journal in FLOORS[args.db]:
                floors.append(
                    {
                        "round": round_,
                        "when": "before",
                        **floor(workdir, size["floor_changes"], journal, args.postgres),
                    }
                )
            for workload in workloads:
                for engine in engines:
                    if engine in skipped:
                        records.append(
                            {
                                **{"engine": engine, "workload": workload, "variant": None},
                                **{"ok": True, "measured": False, "status": "not run"},
                                **{"note": "not run on PostgreSQL (see below)", "round": round_},
                            }
                        )
                        continue
                    variants = listed[engine]["variants"].get(workload) or [None]
                    for variant in variants:
                        command = [
                            *worker_command(engine, args.peers_python),
                            "--workload", workload,
                            "--sizes", args.sizes,
                            "--dir", str(workdir),
                        ]  # fmt: skip
                        if variant:
                            command += ["--variant", variant]
                        t0 = time.perf_counter()
                        if postgres:
                            with bench_pg_w1.fresh_database(
                                args.postgres, f"peers_{engine}"
                            ) as url:
                                record = call_worker([*command, "--db-url", url], args.timeout)
                        else:
                            record = call_worker(command, args.timeout)
                        record.setdefault("engine", engine)
                        record.setdefault("workload", workload)
                        record.setdefault("variant", variant)
                        record["round"] = round_
                        records.append(record)
                        versions.update(record.get("versions") or {})
                        if not record.get("ok"):
                            outcome = f"FAILED: {record.get('error')}"
                            print(record.get("stderr", ""), file=sys.stderr)
                        elif not record.get("measured", True):
                            outcome = record.get("note", "not measured")
                        else:
                            outcome = (
                                f"{record['wall_s']:8.3f} s {record['steps_per_s']:>9,.0f} steps/s"
                                f" {record['peak_rss_mb']:6.1f} MiB"
                            )
                        print(
                            f"  round {round_} {workload:<6} {NAMES[engine]:<9} {variant or '-':<22}"
                            f" {outcome}  ({time.perf_counter() - t0:.0f} s)",
                            flush=True,
                        )
            for journal in FLOORS[args.db]:
                floors.append(
                    {
                        "round": round_,
                        "when": "after",
                        **floor(workdir, size["floor_changes"], journal, args.postgres),
                    }
                )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = summarise(records)
    ratios = add_ratios(rows)
    floor_summary = {
        journal: statistics.median(
            f["commits_per_s"] for f in floors if f["journal_mode"] == journal
        )
        for journal in FLOORS[args.db]
        if any(f["journal_mode"] == journal for f in floors)
    }
    floor_rate = floor_summary.get(FLOORS[args.db][0])
    for row in rows:
        if row["workload"] == "W1" and "steps_per_s" in row and floor_rate:
            row["x_floor"] = row["steps_per_s"] / floor_rate
    checks = claims(rows, ratios, floor_rate)
    print()
    print(markdown_table(rows, size))
    print()
    if postgres and floor_rate:
        print(
            f"PostgreSQL's floor (one-row INSERT + COMMIT per transaction, synchronous_commit=on,"
            f" psycopg2, median of {len(floors)} measurements): {floor_rate:,.0f} commits/s"
        )
    elif floor_rate:
        print(
            f"raw SQLite floor (one durable single-row commit per transaction, synchronous=FULL,"
            f" median of {len(floors) // 2} measurements): WAL {floor_rate:,.0f} commits/s,"
            f" rollback journal {floor_summary['delete']:,.0f} commits/s"
        )
    for row in rows:
        if "x_floor" in row:
            print(
                f"W1 {NAMES[row['engine']]} ({row['variant']}): {row['steps_per_s']:,.0f} steps/s"
                f" = {row['x_floor']:.2f}x the floor"
            )
    if skipped:
        print(f"taskflow: {TASKFLOW_ON_POSTGRES}")
    print("variants:")
    for row in rows:
        if row.get("label"):
            print(f"  {row['workload']} {NAMES[row['engine']]} {row['variant']}: {row['label']}")
    durability = {
        NAMES[r["engine"]]: r["durability"] for r in rows if isinstance(r.get("durability"), dict)
    }
    for engine, setting in durability.items():
        print(f"durability in force, {engine}: {setting}")
    print("ratios (fastest peer variant / fastest pydynflow variant, wall time):")
    for key, value in ratios.items():
        engine, workload = key.split("/")
        line = (
            f"  {workload}: {NAMES[engine]} ({value['peer_variant']}) {value['peer_wall_s']:.3f} s"
            f" / pydynflow ({value['pydynflow_variant']}) {value['pydynflow_wall_s']:.3f} s ="
            f" {value['ratio']:.1f}x"
        )
        if "reference" in value:
            ref = value["reference"]
            line += (
                f"; against the reference {ref['peer_variant']} ({ref['peer_wall_s']:.3f} s):"
                f" {ref['ratio']:.1f}x"
            )
        print(line)
    for check in checks:
        print(
            f"{'PASS' if check['met'] else 'FAIL'}: {check['claim']} (measured {check['measured']:.1f}x)"
        )
    print(f"versions: {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}")
    print(f"total {time.perf_counter() - started:.0f} s")
    errors = [
        f"{r['workload']} {r['engine']} {r.get('variant')}: {r.get('error')}"
        for r in rows
        if r["status"] == "failed"
    ]
    payload = {
        "created": created.isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "db": args.db,
        "machine": info,
        "versions": versions,
        "sizes": args.sizes,
        "size": size,
        "repeat": args.repeat,
        "engines": engines,
        "workloads": workloads,
        "floors": {"median_commits_per_s": floor_summary, "runs": floors},
        "not_run": {engine: TASKFLOW_ON_POSTGRES for engine in sorted(skipped)},
        "w1_x_floor": {
            f"{r['engine']}/{r['variant']}": r["x_floor"] for r in rows if "x_floor" in r
        },
        "rows": rows,
        "ratios": ratios,
        "claims": checks,
        "table_markdown": markdown_table(rows, size),
        "ok": not errors,
        "errors": errors,
        "runs": records,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"results: {out}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
