"""DBOS's side of ``bench/bench_peers.py``: one workload, one variant, one JSON line.

Runs under ``bench/.venv-peers``. DBOS is configured with its documented SQLite system
database (``DBOSConfig`` ``system_database_url="sqlite:///<fresh file>"``) and otherwise its
defaults (SQLite's default rollback journal and ``synchronous=FULL``: durable commits; the
settings in force are read back from DBOS's own engine and reported); with ``--db-url``, with
that fresh PostgreSQL database as its system database (DBOS's home database: its tables in
the ``dbos`` schema, ``LISTEN``/``NOTIFY`` for ``recv``; the server's ``synchronous_commit``
read back and reported). Workflows are
``@DBOS.workflow()`` functions calling ``@DBOS.step()`` functions, submitted in the ways the
DBOS documentation presents (``DBOS.start_workflow``/``start_workflow_async`` for background
workflows, a ``Queue`` or ``asyncio`` tasks + ``gather`` for concurrent steps, ``DBOS.recv``/
``recv_async`` + ``DBOS.send_bulk`` for W4). Every variant is a separate run; the orchestrator
compares pydynflow with the fastest.

    bench/.venv-peers/bin/python bench/peers/dbos_worker.py --workload W1 --dir /tmp/x
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    SLEEP_S,
    WAIT_TIMEOUT,
    BenchFailure,
    fresh_db,
    run_worker,
    sqlite_settings,
    steps_of,
    threads_now,
    wait_until,
)
from dbos import DBOS, SendMessage  # noqa: E402

W4_CAP = 1_000  # DBOS's sync recv holds a thread per waiting workflow: W4 is capped here
TOPIC = "go"
QUEUE = "w2"

VARIANTS: dict[str, list[str]] = {
    "W1": ["start_workflow", "start_workflow_async", "one_after_another"],
    "W2": ["async_gather", "queue", "sequential_loop"],
    "W3": ["async", "start_workflow"],
    "W4": ["sync_recv", "async_recv"],
    "W4-10k": [],
}

LABELS = {
    ("W1", "start_workflow"): "DBOS.start_workflow x N (sync), then get_result all",
    ("W1", "start_workflow_async"): "await DBOS.start_workflow_async x N (async), then all results",
    ("W1", "one_after_another"): "each workflow called and finished before the next (sync)",
    ("W2", "async_gather"): "async workflow: asyncio.create_task x 1,000 steps + gather, then join",
    ("W2", "queue"): "sync workflow: Queue.enqueue x 1,000 steps (default queue), then join",
    ("W2", "sequential_loop"): "REFERENCE, not concurrent: the 1,000 steps in a loop, then join",
    ("W3", "async"): "async workflows, start_workflow_async x N; 5 async steps via gather",
    ("W3", "start_workflow"): "sync workflows, start_workflow x N; 5 steps via start_workflow",
    ("W4", "sync_recv"): "sync workflows blocked in DBOS.recv; DBOS.send_bulk",
    ("W4", "async_recv"): "async workflows awaiting DBOS.recv_async; DBOS.send_bulk_async",
}

NOT_MEASURED = {
    "W4-10k": (
        "not run",
        f"not run: DBOS capped at {W4_CAP:,} workflows (the sync variant holds one thread per"
        " waiting workflow); see W4",
    ),
}


# -- workflows and steps (registered before DBOS.launch) ------------------------------------


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.step()
async def anoop(i: int) -> int:
    return i


@DBOS.step()
def sleep_step(i: int) -> int:
    time.sleep(SLEEP_S)
    return i


@DBOS.step()
async def async_sleep_step(i: int) -> int:
    await asyncio.sleep(SLEEP_S)
    return i


@DBOS.workflow()
def chain(k: int, steps: int) -> int:
    for i in range(steps):
        noop(i)
    return k


@DBOS.workflow()
async def async_chain(k: int, steps: int) -> int:
    for i in range(steps):
        await anoop(i)
    return k


@DBOS.workflow()
async def fan_out_gather(n: int) -> int:
    tasks = [asyncio.create_task(anoop(i)) for i in range(n)]  # deterministic start order
    done = await asyncio.gather(*tasks)
    await anoop(-1)  # the join
    return len(done)


@DBOS.workflow()
def fan_out_queue(n: int) -> int:
    handles = [DBOS.enqueue_workflow(QUEUE, noop, i) for i in range(n)]
    done = [h.get_result() for h in handles]
    noop(-1)  # the join
    return len(done)


@DBOS.workflow()
def loop_then_join(n: int) -> int:
    for i in range(n):
        noop(i)
    noop(-1)  # the join
    return n


@DBOS.workflow()
async def io_fan_out_async(k: int, fanout: int) -> int:
    await anoop(0)
    tasks = [asyncio.create_task(async_sleep_step(i)) for i in range(fanout)]
    await asyncio.gather(*tasks)
    await anoop(1)
    return k


@DBOS.workflow()
def io_fan_out_sync(k: int, fanout: int) -> int:
    noop(0)
    handles = [DBOS.start_workflow(sleep_step, i) for i in range(fanout)]
    for h in handles:
        h.get_result()
    noop(1)
    return k


@DBOS.workflow()
def waiter(k: int) -> Any:
    return DBOS.recv(TOPIC, timeout_seconds=WAIT_TIMEOUT)


@DBOS.workflow()
async def async_waiter(k: int) -> Any:
    return await DBOS.recv_async(TOPIC, timeout_seconds=WAIT_TIMEOUT)


# -- measurement ----------------------------------------------------------------------------


Store = Path | str
"""Where DBOS keeps its system database: a SQLite file, or a PostgreSQL URL."""


def count(store: Store, sql: str) -> int:
    if isinstance(store, str):
        import psycopg  # DBOS's own PostgreSQL driver

        with psycopg.connect(store, options="-c search_path=dbos") as conn:
            row = conn.execute(sql).fetchone()
            assert row is not None
            return int(row[0])
    conn = sqlite3.connect(store, timeout=60)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def settings_in_force(postgres: bool) -> dict[str, Any]:
    """Read the durability settings on one of DBOS's own connections."""
    from dbos._dbos import _get_dbos_instance  # internal: only to read the settings

    raw = _get_dbos_instance()._sys_db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if postgres:
            found = {}
            for name in ("synchronous_commit", "fsync", "wal_sync_method"):
                cur.execute(f"SHOW {name}")
                found[name] = cur.fetchone()[0]
            return found
        journal = cur.execute("PRAGMA journal_mode").fetchone()[0]
        sync = cur.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        raw.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": journal, "synchronous": names.get(sync, sync)}


def check(path: Store, workflows: int, steps: int) -> dict[str, int]:
    """Fail unless the store holds ``workflows`` successful workflows and ``steps`` step
    outputs (beyond DBOS's own operations such as recv/sleep/getResult)."""
    ok = count(path, "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'")
    bad = count(path, "SELECT count(*) FROM workflow_status WHERE status != 'SUCCESS'")
    ours = count(
        path,
        "SELECT count(*) FROM operation_outputs WHERE function_name NOT LIKE 'DBOS.%'"
        " AND function_name NOT LIKE 'temp_workflow%' AND child_workflow_id IS NULL",
    )
    if bad or ok < workflows:
        raise BenchFailure(f"{ok} workflows SUCCESS, {bad} not, expected >= {workflows}")
    if steps and ours < steps:
        raise BenchFailure(f"{ours} step outputs recorded, expected >= {steps}")
    return {"workflows_success": ok, "step_outputs": ours}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_async(make: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(make())  # type: ignore[arg-type]


def measure(
    workload: str, variant: str, size: dict[str, int], workdir: Path, db_url: str | None
) -> dict[str, Any]:
    path: Store = db_url if db_url is not None else fresh_db(workdir, f"dbos-{workload}-{variant}")
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(
        config={
            "name": "pydynflow-bench-peers",
            "system_database_url": db_url or f"sqlite:///{path}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        if workload == "W2" and variant == "queue":
            DBOS.register_queue(QUEUE)  # defaults: no concurrency limit, 1 s polling
        result = WORKLOADS[workload](variant, size, path)
        result["durability"] = settings_in_force(db_url is not None)
        if isinstance(path, Path):
            result["durability"].update(sqlite_settings(path))
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
    result["label"] = LABELS[(workload, variant)]
    # Not the workload as defined (no concurrency): shown, but not what the ratios compare.
    result["reference"] = (workload, variant) == ("W2", "sequential_loop")
    return result


def w1(variant: str, size: dict[str, int], path: Store) -> dict[str, Any]:
    plans, steps = size["w1_plans"], size["w1_steps"]
    if variant == "start_workflow":

        def go() -> list[int]:
            handles = [DBOS.start_workflow(chain, k, steps) for k in range(plans)]
            return [h.get_result() for h in handles]

        wall, results = timed(go)
    elif variant == "start_workflow_async":

        async def main() -> list[int]:
            handles = [await DBOS.start_workflow_async(async_chain, k, steps) for k in range(plans)]
            return [await h.get_result() for h in handles]

        wall, results = timed(lambda: run_async(main))
    else:
        wall, results = timed(lambda: [chain(k, steps) for k in range(plans)])
    threads = threads_now()
    if results != list(range(plans)):
        raise BenchFailure(f"W1 results {results[:5]}...")
    return {
        "wall_s": wall,
        "steps": steps_of("W1", size),
        **threads,
        "extra": check(path, plans, plans * steps),
    }


def w2(variant: str, size: dict[str, int], path: Store) -> dict[str, Any]:
    n = size["w2_steps"]
    if variant == "async_gather":
        wall, result = timed(lambda: run_async(lambda: fan_out_gather(n)))
    elif variant == "queue":
        wall, result = timed(lambda: fan_out_queue(n))
    else:
        wall, result = timed(lambda: loop_then_join(n))
    threads = threads_now()
    if result != n:
        raise BenchFailure(f"W2 returned {result}, expected {n}")
    # A queued step runs as its own (temporary) workflow: count those too.
    workflows = 1 + (n if variant == "queue" else 0)
    extra = check(path, workflows, n + 1)
    return {"wall_s": wall, "steps": steps_of("W2", size), **threads, "extra": extra}


def w3(variant: str, size: dict[str, int], path: Store) -> dict[str, Any]:
    plans, fanout = size["w3_plans"], size["w3_fanout"]
    if variant == "async":

        async def main() -> list[int]:
            handles = [
                await DBOS.start_workflow_async(io_fan_out_async, k, fanout) for k in range(plans)
            ]
            return [await h.get_result() for h in handles]

        wall, results = timed(lambda: run_async(main))
        workflows = plans
    else:

        def go() -> list[int]:
            handles = [DBOS.start_workflow(io_fan_out_sync, k, fanout) for k in range(plans)]
            return [h.get_result() for h in handles]

        wall, results = timed(go)
        workflows = plans * (1 + fanout)  # each started step runs as its own workflow
    threads = threads_now()
    if results != list(range(plans)):
        raise BenchFailure(f"W3 results {results[:5]}...")
    extra = check(path, workflows, plans * (fanout + 2))
    extra["serial_sleep_s"] = plans * fanout * SLEEP_S
    return {"wall_s": wall, "steps": steps_of("W3", size), **threads, "extra": extra}


def w4(variant: str, size: dict[str, int], path: Store) -> dict[str, Any]:
    n = min(size["w4_n"], W4_CAP)

    def parked() -> int:
        # recv records its durable timeout (a DBOS.sleep row) once it is set up to wait.
        return count(
            path, "SELECT count(*) FROM operation_outputs WHERE function_name = 'DBOS.sleep'"
        )

    if variant == "sync_recv":
        start = time.perf_counter()
        handles = [DBOS.start_workflow(waiter, k) for k in range(n)]
        wait_until(lambda: parked() >= n, WAIT_TIMEOUT, f"{n} workflows waiting in recv")
        park_s = time.perf_counter() - start
        waiting = threads_now()
        first_send = time.perf_counter()
        DBOS.send_bulk(
            [SendMessage(destination_id=h.workflow_id, message="go", topic=TOPIC) for h in handles]
        )
        results = [h.get_result() for h in handles]
        events_s = time.perf_counter() - first_send
    else:

        async def main() -> tuple[float, float, dict[str, int], list[Any]]:
            start = time.perf_counter()
            handles = [await DBOS.start_workflow_async(async_waiter, k) for k in range(n)]
            deadline = start + WAIT_TIMEOUT
            while parked() < n:
                if time.perf_counter() > deadline:
                    raise BenchFailure(f"timed out waiting for {n} workflows in recv_async")
                await asyncio.sleep(0.01)
            park = time.perf_counter() - start
            threads = threads_now()
            first = time.perf_counter()
            await DBOS.send_bulk_async(
                [
                    SendMessage(destination_id=h.workflow_id, message="go", topic=TOPIC)
                    for h in handles
                ]
            )
            done = [await h.get_result() for h in handles]
            return park, time.perf_counter() - first, threads, done

        park_s, events_s, waiting, results = run_async(main)
    if results != ["go"] * n:
        raise BenchFailure(
            f"W4: {sum(r != 'go' for r in results)} workflows did not get the message"
        )
    extra = check(path, n, 0)
    extra.update(park_s=park_s, events_s=events_s, cap=W4_CAP, requested_n=size["w4_n"])
    return {
        "n": n,
        "wall_s": park_s + events_s,
        "steps": n,
        "threads": waiting["threads"],  # while all n wait
        "os_threads": waiting["os_threads"],
        "extra": extra,
    }


WORKLOADS: dict[str, Callable[[str, dict[str, int], Store], dict[str, Any]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
}


def versions() -> dict[str, str]:
    return {"dbos": version("dbos"), "sqlalchemy": version("sqlalchemy")}


if __name__ == "__main__":
    sys.exit(run_worker("dbos", VARIANTS, measure, versions, NOT_MEASURED))
