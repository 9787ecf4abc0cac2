"""pydynflow's side of ``bench/bench_peers.py``: one workload, one variant, one JSON line.

Runs under the project's ``.venv`` and reuses the workloads of ``bench/bench_workloads.py``
(W1-W3: ``Chain``, ``FanOutJoin``, ``IoFanOut`` on a started ``World``) and
``bench/bench_w4.py`` (W4: ``CallbackWaiter``/``AsyncWaiter``), so that the figures are those
of the project's own benchmarks, on SQLite with the default durability (WAL,
``synchronous=FULL``), a fresh file per run, or on the fresh PostgreSQL database ``--db-url``
names (the server's ``synchronous_commit``, read back and reported).

    .venv/bin/python bench/peers/pydynflow_worker.py --workload W1 --dir /tmp/x [--sizes small]
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

import bench_w4  # noqa: E402
import bench_workloads  # noqa: E402
from common import BenchFailure, run_worker, sqlite_settings, steps_of  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "W1": ["threads16", "serial", "pool32"],
    "W2": ["default"],
    "W3": ["default"],
    "W4": ["callback", "async"],
    "W4-10k": ["callback", "async"],
}

LABELS = {
    ("W1", "threads16"): "World.trigger from 16 threads, then wait all",
    ("W1", "serial"): "World.trigger one by one from one thread, then wait all",
    ("W1", "pool32"): "World.trigger from 16 threads, pool_size=32, then wait all",
    ("W2", "default"): "one plan: concurrence of 1,000 actions, then a join",
    ("W3", "default"): "all plans triggered from 16 threads, pool_size=50",
    ("W4", "callback"): "suspend(callback), world.event from 16 threads",
    ("W4", "async"): "await wait_for_event(), world.event from 16 threads",
    ("W4-10k", "callback"): "suspend(callback), world.event from 16 threads",
    ("W4-10k", "async"): "await wait_for_event(), world.event from 16 threads",
}


def durability(workdir: Path, before: set[Path]) -> dict[str, Any]:
    """Return the journal mode stored in the database file this run created, next to the
    engine's default synchronous setting (FULL, per connection, not stored in the file)."""
    created = sorted(set(workdir.glob("*/bench.db")) - before)
    modes = sorted({sqlite_settings(path)["journal_mode_in_file"] for path in created})
    return {"journal_mode_in_file": ",".join(modes) or "?", "synchronous": "FULL (default)"}


def pg_durability(url: str) -> dict[str, Any]:
    """Return the server's durability settings as a connection to ``url`` gets them."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        found: dict[str, Any] = {}
        with conn.cursor() as cursor:
            for name in ("synchronous_commit", "fsync", "wal_sync_method"):
                cursor.execute(f"SHOW {name}")
                found[name] = cursor.fetchone()[0]
        return found
    finally:
        conn.close()


def measure(
    workload: str, variant: str, size: dict[str, int], workdir: Path, db_url: str | None
) -> dict[str, Any]:
    if db_url is not None:
        result = run(workload, variant, size, workdir, db_url)
        result["durability"] = pg_durability(db_url)
        return result
    before = set(workdir.glob("*/bench.db"))
    result = run(workload, variant, size, workdir)
    result["durability"] = durability(workdir, before)
    return result


def run(
    workload: str, variant: str, size: dict[str, int], workdir: Path, url: str | None = None
) -> dict[str, Any]:
    label = LABELS[(workload, variant)]
    if workload in ("W1", "W2", "W3"):
        sizes = {**bench_workloads.SIZES["full"], **size}
        if workload == "W1":
            run = bench_workloads.w1(
                workdir,
                sizes,
                parallel=variant != "serial",
                # A step holds one of the pool's workers from its start to its commit: the
                # pool bounds the steps in flight (each DBOS workflow runs on a thread of its
                # own), so 32 is what a deployment of many short steps would choose.
                pool_size=32 if variant == "pool32" else 5,
                url=url,
            )
        elif workload == "W2":
            run = bench_workloads.w2(workdir, sizes, url=url)
        else:
            run = bench_workloads.w3(workdir, sizes, url=url)
            label = label.replace("50", str(size["w3_pool"]))
        if run.count != steps_of(workload, size):
            raise BenchFailure(
                f"{workload} ran {run.count} steps, expected {steps_of(workload, size)}"
            )
        return {
            "label": label,
            "wall_s": run.wall_s,
            "steps": run.count,
            "threads": run.threads,  # threading.active_count() after the last wait()
            "extra": run.extra,
        }
    n = size["w4_n"] if workload == "W4" else size["w4_big_n"]
    result = bench_w4.run_style(variant, n, workdir, url=url)
    if result.error is not None or not result.all_success:
        raise BenchFailure(result.error or f"W4 {variant}: not all plans succeeded")
    events_s = n / result.events_per_s  # first event sent -> last plan done
    return {
        "label": label,
        "n": n,
        "wall_s": result.trigger_park_s + events_s,
        "steps": n,
        "threads": result.threads_waiting,  # threading.active_count() while all N wait
        "os_threads": result.os_threads_waiting,
        "extra": {
            "park_s": result.trigger_park_s,
            "events_s": events_s,
            "event_p50_ms": result.event_p50_ms,
            "event_p99_ms": result.event_p99_ms,
            "kb_per_step": result.kb_per_step,
            "rss_waiting_mb": result.rss_waiting_mb,
            "thread_groups": result.thread_groups,
        },
    }


def versions() -> dict[str, str]:
    return {"pydynflow": version("pydynflow"), "pykka": version("pykka")}


if __name__ == "__main__":
    sys.exit(run_worker("pydynflow", VARIANTS, measure, versions))
