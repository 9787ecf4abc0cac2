"""What every engine worker of ``bench/bench_peers.py`` shares (standard library only).

The workers run under different interpreters (pydynflow under the project's ``.venv``, DBOS and
taskflow under ``bench/.venv-peers``), so this module imports nothing but the standard library.
A worker measures one workload in one way ("variant") for one engine, in its own process, and
prints one JSON line (the last line of its stdout) built by :func:`emit`. With ``--db-url`` it
uses that (empty, fresh) PostgreSQL database instead of a SQLite file of its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKLOADS = ("W1", "W2", "W3", "W4", "W4-10k")

# The sizes of DESIGN.md ("full") and a CI-sized run ("small"). W4 is measured at the size the
# peers are capped at (``w4_n``) for the side-by-side ratios; ``W4-10k`` is DESIGN.md's size.
SIZES: dict[str, dict[str, int]] = {
    "full": {
        "w1_plans": 200,
        "w1_steps": 10,
        "w2_steps": 1_000,
        "w3_plans": 100,
        "w3_fanout": 5,
        "w3_pool": 50,
        "w4_n": 1_000,
        "w4_big_n": 10_000,
        "floor_changes": 2_000,
    },
    "small": {
        "w1_plans": 10,
        "w1_steps": 10,
        "w2_steps": 50,
        "w3_plans": 5,
        "w3_fanout": 5,
        "w3_pool": 10,
        "w4_n": 50,
        "w4_big_n": 100,
        "floor_changes": 200,
    },
}

SLEEP_S = 0.01  # W3's I/O step
SUBMIT_THREADS = 16  # as bench/bench_workloads.py: plans submitted from 16 threads
WAIT_TIMEOUT = 1_800.0  # seconds: a hang fails the run instead of blocking it forever


class BenchFailure(Exception):
    """A workflow did not succeed (or did not finish): its figures would be meaningless."""


def steps_of(workload: str, size: dict[str, int], n: int | None = None) -> int:
    """Return the run steps a workload executes (what steps/s counts)."""
    if workload == "W1":
        return size["w1_plans"] * size["w1_steps"]
    if workload == "W2":
        return size["w2_steps"] + 1  # and the join
    if workload == "W3":
        return size["w3_plans"] * (size["w3_fanout"] + 2)
    return n if n is not None else size["w4_n"]  # W4: one waiting step per workflow


def peak_rss_mb() -> float:
    """Return this process's peak RSS so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def os_threads() -> int:
    """Return the kernel's thread count for this process (``Threads:`` of /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def threads_now() -> dict[str, int]:
    return {"threads": threading.active_count(), "os_threads": os_threads()}


def fresh_db(workdir: Path, name: str, suffix: str = ".sqlite") -> Path:
    """Return the path of a database file in a fresh directory (nothing left from other runs)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    return directory / f"bench{suffix}"


def sqlite_settings(path: Path) -> dict[str, Any]:
    """Return the journal mode stored in a database file (WAL is persistent; others are not)."""
    conn = sqlite3.connect(path)
    try:
        return {"journal_mode_in_file": conn.execute("PRAGMA journal_mode").fetchone()[0]}
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.01
) -> None:
    """Poll ``predicate`` every ``poll`` s until it holds; BenchFailure after ``timeout`` s."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise BenchFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def parser(engine: str, variants: dict[str, list[str]]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"One measured run of one workload on {engine}.")
    p.add_argument("--workload", choices=WORKLOADS, required=True)
    p.add_argument("--variant", help="how the workload is submitted (default: the first)")
    p.add_argument("--sizes", choices=sorted(SIZES), default="full")
    p.add_argument("--dir", type=Path, required=True, help="where the database files go")
    p.add_argument("--db-url", help="an empty PostgreSQL database to use instead of SQLite")
    p.add_argument("--list", action="store_true", help="print the variants as JSON and exit")
    p.epilog = "variants: " + "; ".join(f"{w}: {', '.join(v) or '-'}" for w, v in variants.items())
    return p


def emit(record: dict[str, Any]) -> None:
    """Print the result as one JSON line (the orchestrator reads the last line of stdout)."""
    sys.stdout.flush()
    print(json.dumps(record, sort_keys=True), flush=True)


def run_worker(
    engine: str,
    variants: dict[str, list[str]],
    measure: Callable[[str, str, dict[str, int], Path, str | None], dict[str, Any]],
    versions: Callable[[], dict[str, str]],
    not_measured: dict[str, tuple[str, str]] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse the arguments, measure one workload/variant, print its JSON line, return the code.

    ``measure(workload, variant, size, workdir, db_url)`` returns at least ``wall_s`` and
    ``steps``; ``db_url`` is ``--db-url`` (None: SQLite).
    ``not_measured`` maps a workload to ``(status, reason)``, status ``"unsupported"`` (the
    engine lacks the feature) or ``"not run"`` (e.g. a size cap): the record then says so
    (``measured: false``) instead of holding a number.
    """
    args = parser(engine, variants).parse_args(argv)
    if args.list:
        emit({"engine": engine, "variants": variants, "not_measured": not_measured or {}})
        return 0
    size = SIZES[args.sizes]
    record: dict[str, Any] = {
        "engine": engine,
        "workload": args.workload,
        "sizes": args.sizes,
        "measured": True,
        "status": "measured",
        "ok": False,
        "error": None,
        "versions": versions(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "db": "postgres" if args.db_url else "sqlite",
    }
    if not_measured and args.workload in not_measured:
        status, note = not_measured[args.workload]
        record.update(measured=False, status=status, ok=True, variant=None, note=note)
        emit(record)
        return 0
    choices = variants.get(args.workload, [])
    variant = args.variant or (choices[0] if choices else None)
    if variant not in choices:
        record["error"] = f"unknown variant {variant!r} for {args.workload}: {choices}"
        emit(record)
        return 2
    record["variant"] = variant
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(args.workload, variant, size, args.dir, args.db_url)
    except Exception as exc:  # reported, not raised: the orchestrator goes on with the others
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
        record["peak_rss_mb"] = peak_rss_mb()
        emit(record)
        return 1
    record.update(result)
    record["ok"] = True
    record["steps_per_s"] = result["steps"] / result["wall_s"]
    record["peak_rss_mb"] = peak_rss_mb()
    emit(record)
    return 0
