"""OpenStack taskflow's side of ``bench/bench_peers.py``: one workload, one variant, one JSON line.

Runs under ``bench/.venv-peers``. Every flow is run by a taskflow engine whose storage is the
SQLAlchemy persistence backend on a fresh SQLite file (``taskflow.persistence.backends.fetch(
{"connection": "sqlite:///<file>"})``, schema created with ``upgrade()``), with SQLite's
defaults (rollback journal, ``synchronous=FULL``: durable commits; the settings in force are
read back from the backend's engine and reported). Steps are ``taskflow.task.Task``s; W1 chains
them in a ``linear_flow``, W2 and W3 use an ``unordered_flow`` under the ``parallel`` engine
(its default thread executor). taskflow runs one flow per engine (``engine.run()`` blocks), so
"all at once" is 16 engines running in 16 threads, as pydynflow's plans are triggered from 16
threads. W4 needs a workflow to wait for an external event: taskflow has no event or signal
API, so W4 is reported as not supported.

    bench/.venv-peers/bin/python bench/peers/taskflow_worker.py --workload W1 --dir /tmp/x
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    SLEEP_S,
    SUBMIT_THREADS,
    BenchFailure,
    fresh_db,
    run_worker,
    sqlite_settings,
    steps_of,
    threads_now,
)
from taskflow import engines, task  # noqa: E402
from taskflow.patterns import linear_flow, unordered_flow  # noqa: E402
from taskflow.persistence import backends, models  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "W1": ["engines_16_threads", "one_after_another"],
    "W2": ["parallel_engine"],
    "W3": ["engines_16_threads"],
    "W4": [],
    "W4-10k": [],
}

LABELS = {
    ("W1", "engines_16_threads"): "a serial engine per flow, 16 engines running at once (threads)",
    ("W1", "one_after_another"): "a serial engine per flow, one flow after another",
    ("W2", "parallel_engine"): "parallel engine: unordered_flow of 1,000 tasks, then a join task",
    ("W3", "engines_16_threads"): "a parallel engine per flow, 16 engines running at once",
}

NO_EVENTS = "not supported: taskflow has no event or signal API for a waiting flow"
NOT_MEASURED = {"W4": ("unsupported", NO_EVENTS), "W4-10k": ("unsupported", NO_EVENTS)}


class NoOp(task.Task):
    def execute(self) -> None:
        return None


class Sleep(task.Task):
    def execute(self) -> None:
        time.sleep(SLEEP_S)  # the workload (stand-in for I/O)


def chain(k: int, steps: int) -> linear_flow.Flow:
    flow = linear_flow.Flow(f"chain-{k}")
    for i in range(steps):
        flow.add(NoOp(f"noop-{i}"))
    return flow


def fan_out_join(n: int) -> linear_flow.Flow:
    fan = unordered_flow.Flow("fan-out")
    for i in range(n):
        fan.add(NoOp(f"noop-{i}"))
    return linear_flow.Flow("fan-out-join").add(fan, NoOp("join"))


def io_fan_out(k: int, fanout: int) -> linear_flow.Flow:
    fan = unordered_flow.Flow(f"io-{k}")
    for i in range(fanout):
        fan.add(Sleep(f"sleep-{i}"))
    return linear_flow.Flow(f"io-fan-out-{k}").add(NoOp("first"), fan, NoOp("last"))


class Store:
    """The SQLAlchemy persistence backend on a fresh SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = backends.fetch({"connection": f"sqlite:///{path}"})
        with contextlib.closing(self.backend.get_connection()) as conn:
            conn.upgrade()

    def run(self, flow: Any, engine: str) -> str:
        """Run ``flow`` to the end in its own logbook (logbooks are not thread-safe) and
        return its final state."""
        book = models.LogBook(f"book-{flow.name}")
        loaded = engines.load(flow, backend=self.backend, book=book, engine=engine)
        loaded.run()
        return str(loaded.storage.get_flow_state())

    def settings(self) -> dict[str, Any]:
        raw = self.backend.engine.raw_connection()
        try:
            cur = raw.cursor()
            journal = cur.execute("PRAGMA journal_mode").fetchone()[0]
            sync = cur.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            raw.close()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"journal_mode": journal, "synchronous": names.get(sync, sync)}

    def check(self, flows: int, tasks: int) -> dict[str, int]:
        """Fail unless the store holds ``flows`` successful flows and ``tasks`` tasks."""
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            (ok_flows,) = conn.execute(
                "SELECT count(*) FROM flowdetails WHERE state = 'SUCCESS'"
            ).fetchone()
            (ok_tasks,) = conn.execute(
                "SELECT count(*) FROM atomdetails WHERE state = 'SUCCESS'"
            ).fetchone()
        finally:
            conn.close()
        if ok_flows != flows or ok_tasks != tasks:
            raise BenchFailure(
                f"{ok_flows} flows and {ok_tasks} tasks SUCCESS in the store, "
                f"expected {flows} and {tasks}"
            )
        return {"flows_success": ok_flows, "tasks_success": ok_tasks}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.backend.close()


def run_many(store: Store, flows: list[Any], engine: str, threads: int) -> tuple[float, list[str]]:
    """Run ``flows`` from ``threads`` threads; return the wall time and their end states.

    The threads are all started before the clock, as in ``bench/bench_workloads.py``
    (``started_callers``): they stand for a service's threads, not work the engine does.
    """
    if threads <= 1:
        start = time.perf_counter()
        states = [store.run(flow, engine) for flow in flows]
        return time.perf_counter() - start, states
    with ThreadPoolExecutor(threads, thread_name_prefix="bench-engine") as pool:
        everyone = threading.Barrier(threads + 1)
        waiting = [pool.submit(everyone.wait) for _ in range(threads)]
        everyone.wait()
        for future in waiting:
            future.result()
        start = time.perf_counter()
        states = list(pool.map(lambda flow: store.run(flow, engine), flows))
        wall = time.perf_counter() - start
    return wall, states


def measure(
    workload: str, variant: str, size: dict[str, int], workdir: Path, db_url: str | None
) -> dict[str, Any]:
    if db_url is not None:
        raise BenchFailure("taskflow is measured on SQLite only (see bench_peers.py)")
    store = Store(fresh_db(workdir, f"taskflow-{workload}-{variant}"))
    try:
        if workload == "W1":
            plans, steps = size["w1_plans"], size["w1_steps"]
            flows = [chain(k, steps) for k in range(plans)]
            threads = SUBMIT_THREADS if variant == "engines_16_threads" else 1
            wall, states = run_many(store, flows, "serial", threads)
            count = (plans, plans * steps)
        elif workload == "W2":
            n = size["w2_steps"]
            wall, states = run_many(store, [fan_out_join(n)], "parallel", 1)
            count = (1, n + 1)
        else:
            plans, fanout = size["w3_plans"], size["w3_fanout"]
            flows = [io_fan_out(k, fanout) for k in range(plans)]
            wall, states = run_many(store, flows, "parallel", SUBMIT_THREADS)
            count = (plans, plans * (fanout + 2))
        threads_at_end = threads_now()
        if any(state != "SUCCESS" for state in states):
            raise BenchFailure(f"flows ended {sorted(set(states))}")
        extra: dict[str, Any] = store.check(*count)
        if workload == "W3":
            extra["serial_sleep_s"] = size["w3_plans"] * size["w3_fanout"] * SLEEP_S
        durability = {**store.settings(), **sqlite_settings(store.path)}
    finally:
        store.close()
    return {
        "label": LABELS[(workload, variant)],
        "wall_s": wall,
        "steps": steps_of(workload, size),
        **threads_at_end,
        "durability": durability,
        "extra": extra,
    }


def versions() -> dict[str, str]:
    return {"taskflow": version("taskflow"), "sqlalchemy": version("sqlalchemy")}


if __name__ == "__main__":
    sys.exit(run_worker("taskflow", VARIANTS, measure, versions, NOT_MEASURED))
