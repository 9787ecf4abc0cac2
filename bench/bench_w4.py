"""W4: 10,000 plans suspended at once, then all events delivered (callback and async style).

Each style runs in a fresh `World` (default ``pool_size``, ``auto_execute=False``) on a fresh
SQLite file in a temporary directory with the default durability (WAL, ``synchronous=FULL``),
one style after the other, each in a fresh interpreter (a child process of this script;
``--in-process`` runs them here, but then the second style's RSS reuses memory that the first
one freed, and its per-step figure comes out too low):

- ``callback``: ``run(event=None)`` calls ``self.suspend(callback)``; the suspend callback runs
  on a worker once the step's ``suspended`` state is committed, and counts the parked steps.
  ``run("go")`` stores the event in ``output``.
- ``async``: ``async def run`` stores ``await self.wait_for_event()`` in ``output``.

Phases per style:

1. World start, then one warm-up plan of the same style run to completion (so that what
   starts lazily, e.g. the worker threads and the asyncio loop thread, is not counted per
   step); ``gc.collect()``; RSS baseline (``/proc/self/statm``).
2. Trigger N plans from a ``ThreadPoolExecutor(16)`` (as W1), wait until all N steps are
   parked with their ``suspended`` state committed; ``gc.collect()``; measure RSS, threads
   (``threading.active_count()`` and the kernel's count from ``/proc/self/status``; the
   submitting pool is shut down by then) and RSS per suspended step
   = (RSS all waiting - baseline) / N.
3. Send ``world.event(plan_id, 2, "go")`` to every plan from a ``ThreadPoolExecutor(16)``,
   recording the time just before each send; each plan's completion time is recorded by a
   done-callback on its ``Triggered.future``. Event-to-completion latency = completion - send
   (a burst: it includes the time the event waits behind the others in the engine's queues);
   events/s = N / (last completion - first send).
4. Check: every future's plan is ``stopped``/``success``; one SQL query counts the plans by
   state/result and the run steps by state in the store; a sample of 100 plans is reloaded
   with ``World.load`` and checked in full. Threads at the end, then ``World.stop``.

MB and KB in the output are 2**20 and 1,024 bytes. The persistence actor's commit counters and
a raw ``sqlite3`` commit time measured in the same directory are reported next to the figures.

Targets (DESIGN.md W4): <= 64 threads in the process while all wait, <= 10 KB RSS per
suspended step, all plans complete. A missed target is reported (PASS/FAIL lines), not an
error: the exit code is 1 only if a plan did not end ``stopped``/``success`` (or hung).

    .venv/bin/python bench/bench_w4.py [--n 10000] [--sizes full|small] [--style both]
                                       [--json PATH] [--dir DIR] [--keep] [--in-process]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydynflow import Action, PlanState, Result, StepState, World  # noqa: E402

SUBMIT_THREADS = 16
RUN_STEP = 2  # step 1 plans the action, step 2 is its run step
SIZES = {"full": 10_000, "small": 200}
STYLES = ("callback", "async")
SAMPLE = 100  # plans reloaded in full at the end
PARK_TIMEOUT = 900.0  # seconds for all N to park: a hang fails the run instead of blocking
DONE_TIMEOUT = 900.0  # seconds for all N to complete after the events
MAX_THREADS = 64
MAX_KB_PER_STEP = 10.0
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- readiness counters ----------------------------------------------------------------------


class Gate:
    """A thread-safe countdown: ``arrive()`` N times sets ``done``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        if expected <= 0:
            self.done.set()

    def arrive(self, *_: Any) -> None:
        with self.lock:
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


GATE = Gate(0)  # replaced per phase; the actions below count on the current one


# -- the bench's actions ---------------------------------------------------------------------


class CallbackWaiter(Action):
    """Suspend until an event; the suspend callback (after the commit) counts the step."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend(GATE.arrive)
        self.output["event"] = event


class AsyncWaiter(Action):
    """Await one event; counts itself just before awaiting (before parking is committed)."""

    async def run(self) -> None:
        GATE.arrive()
        self.output["got"] = await self.wait_for_event()


ACTIONS: dict[str, type[Action]] = {"callback": CallbackWaiter, "async": AsyncWaiter}


# -- measurement -----------------------------------------------------------------------------


class BenchFailure(Exception):
    """Plans did not all end stopped/success (or did not finish in time)."""


def rss_bytes() -> int:
    """Return the process's current resident set size (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def os_threads() -> int:
    """Return the kernel's thread count for this process (``Threads:`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def thread_groups() -> dict[str, int]:
    """Return the live Python threads grouped by name, digits stripped (for diagnosis)."""
    names = Counter(
        re.sub(r"[-_ ]\d+$", "", re.sub(r"-[0-9a-f]{8}\b", "", t.name))
        for t in threading.enumerate()
    )
    return dict(sorted(names.items()))


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def count_suspended(world: World) -> int:
    row = world.storage.database.execute_sql(
        "SELECT count(*) FROM dynflow_steps WHERE state = 'suspended'"
    ).fetchone()
    return int(row[0])


def store_counts(world: World) -> dict[str, int]:
    """Return the plans by state/result and the run steps by state, in one SQL query."""
    rows = world.storage.database.execute_sql(
        "SELECT 'plan', state || '/' || coalesce(result, ''), count(*)"
        " FROM dynflow_execution_plans GROUP BY 2"
        " UNION ALL"
        f" SELECT 'step', state, count(*) FROM dynflow_steps WHERE id = {world.storage.database.param}"
        " GROUP BY 2",
        (RUN_STEP,),
    ).fetchall()
    return {f"{kind}:{key}": int(count) for kind, key, count in rows}


@dataclass
class StyleResult:
    """What one style measured."""

    style: str
    n: int
    threads_waiting: int  # threading.active_count() while all N wait
    os_threads_waiting: int  # the kernel's count, same moment
    thread_groups: dict[str, int]
    rss_start_mb: float  # right after World.start
    rss_baseline_mb: float  # after the warm-up plan
    rss_waiting_mb: float
    kb_per_step: float
    trigger_park_s: float  # first trigger to all N parked (committed)
    trigger_s: float  # first trigger to the last trigger() returned
    event_p50_ms: float
    event_p99_ms: float
    event_max_ms: float
    send_s: float  # first send to the last world.event() returned
    events_per_s: float
    threads_end: int
    threads_after_stop: int
    all_success: bool
    floor_commit_ms: float = 0.0  # raw sqlite3, one FULL commit per row, same directory
    commits: dict[str, int] = field(default_factory=dict)  # persistence actor, per phase
    store: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def run_style(style: str, n: int, workdir: Path, url: str | None = None) -> StyleResult:
    """Measure one style; ``url``: an empty database to use instead of a fresh SQLite file."""
    global GATE
    action = ACTIONS[style]
    directory = Path(tempfile.mkdtemp(prefix=f"w4-{style}-", dir=workdir))
    floor_ms = floor_commit_ms(directory / "floor.db")
    world = World(url or f"sqlite:///{directory / 'bench.db'}", auto_execute=False)
    world.start()
    error: str | None = None
    try:
        gc.collect()
        rss_start = rss_bytes()

        # Warm-up: one plan of the same style, to completion, excluded from N.
        GATE = Gate(1)
        warm = world.trigger(action)
        if not GATE.done.wait(60):
            raise BenchFailure(f"{style}: the warm-up plan did not park")
        wait_parked(world, 1, style, time.perf_counter() + 60)
        world.event(warm.id, RUN_STEP, "go")
        warm_plan = warm.wait(60)
        if (warm_plan.state, warm_plan.result) != (PlanState.STOPPED, Result.SUCCESS):
            raise BenchFailure(f"{style}: warm-up plan ended {warm_plan.state}/{warm_plan.result}")
        gc.collect()
        rss_base = rss_bytes()

        # Phase 2: N plans, all parked.
        GATE = Gate(n)
        completed: dict[str, float] = {}

        def trigger_one(_: int) -> Any:
            return world.trigger(action)

        def watch(triggered: Any) -> None:
            """Record when a plan ends (registered after the RSS reading: harness memory)."""
            plan_id = triggered.id

            def finished(_future: Any) -> None:
                completed[plan_id] = time.perf_counter()  # dict set: atomic under the GIL

            triggered.future.add_done_callback(finished)

        counts = [persistence_counters(world)]
        start = time.perf_counter()
        with ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="bench-submit") as pool:
            triggered = list(pool.map(trigger_one, range(n)))
        trigger_s = time.perf_counter() - start
        deadline = start + PARK_TIMEOUT
        if not GATE.done.wait(max(0.0, deadline - time.perf_counter())):
            raise BenchFailure(
                f"{style}: only {GATE.count} of {n} steps reached the park signal within "
                f"{PARK_TIMEOUT:.0f} s ({count_suspended(world)} suspended in the store)"
            )
        wait_parked(world, n, style, deadline)
        trigger_park_s = time.perf_counter() - start
        counts.append(persistence_counters(world))
        if completed:
            raise BenchFailure(f"{style}: {len(completed)} plans ended before any event")
        gc.collect()
        rss_waiting = rss_bytes()
        threads_waiting = threading.active_count()
        os_threads_waiting = os_threads()
        groups = thread_groups()
        for one in triggered:
            watch(one)

        # Phase 3: every event, from 16 threads, in a shuffled order.
        sent: dict[str, float] = {}
        order = [t.id for t in triggered]
        random.Random(4).shuffle(order)

        def send(plan_id: str) -> bool:
            sent[plan_id] = time.perf_counter()
            return world.event(plan_id, RUN_STEP, "go")

        first_send = time.perf_counter()
        with ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="bench-send") as pool:
            accepted = list(pool.map(send, order))
        send_s = time.perf_counter() - first_send
        if not all(accepted):
            raise BenchFailure(f"{style}: {accepted.count(False)} events were not accepted")
        ended = [t.future.result(DONE_TIMEOUT) for t in triggered]
        # add_done_callback runs the callbacks after the result is set: let them land.
        for _ in range(1000):
            if len(completed) == n:
                break
            time.sleep(0.001)
        latencies = [completed[pid] - sent[pid] for pid in order]
        last_done = max(completed.values())
        events_per_s = n / (last_done - first_send)
        threads_end = threading.active_count()
        counts.append(persistence_counters(world))
        commits = {
            f"{phase}_{key}": after[key] - before[key]
            for phase, before, after in (
                ("park", counts[0], counts[1]),
                ("events", counts[1], counts[2]),
            )
            for key in after
            if key in before
        }

        # Phase 4: all stopped/success.
        bad = [
            (t.id, str(plan.state), str(plan.result))
            for t, plan in zip(triggered, ended, strict=True)
            if (plan.state, plan.result) != (PlanState.STOPPED, Result.SUCCESS)
        ]
        store = store_counts(world)
        total = n + 1  # the warm-up plan too
        store_ok = store.get("plan:stopped/success") == total and store.get("step:success") == total
        sample_ok = all(
            check_loaded(world, plan_id, style)
            for plan_id in random.Random(99).sample(order, min(SAMPLE, n))
        )
        all_success = not bad and store_ok and sample_ok
        if not all_success:
            error = (
                f"{style}: not all plans succeeded: {bad[:3]} store={store} sample_ok={sample_ok}"
            )
    finally:
        world.stop(timeout=60)
    return StyleResult(
        style=style,
        n=n,
        threads_waiting=threads_waiting,
        os_threads_waiting=os_threads_waiting,
        thread_groups=groups,
        rss_start_mb=rss_start / 2**20,
        rss_baseline_mb=rss_base / 2**20,
        rss_waiting_mb=rss_waiting / 2**20,
        kb_per_step=(rss_waiting - rss_base) / n / 1024,
        trigger_park_s=trigger_park_s,
        trigger_s=trigger_s,
        event_p50_ms=percentile(latencies, 0.50) * 1e3,
        event_p99_ms=percentile(latencies, 0.99) * 1e3,
        event_max_ms=max(latencies) * 1e3,
        send_s=send_s,
        events_per_s=events_per_s,
        threads_end=threads_end,
        threads_after_stop=threading.active_count(),
        all_success=all_success,
        floor_commit_ms=floor_ms,
        commits=commits,
        store=store,
        error=error,
    )


def floor_commit_ms(path: Path, commits: int = 200) -> float:
    """Return the mean time of one durable commit of one row on a bare ``sqlite3``
    connection (WAL, ``synchronous=FULL``, as the engine): the disk's floor in this run."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, state TEXT)")
        start = time.perf_counter()
        for i in range(commits):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (?, 'suspended')", (i,))
            conn.execute("COMMIT")
        return (time.perf_counter() - start) / commits * 1e3
    finally:
        conn.close()


def persistence_counters(world: World) -> dict[str, int]:
    """Return the persistence actor's commits and records so far, if these internals exist."""
    try:
        proxy = world._runtime.persistence.proxy()  # type: ignore[union-attr]
        return {"commits": int(proxy.commits.get()), "records": int(proxy.records.get())}
    except Exception:
        return {}


def wait_parked(world: World, n: int, style: str, deadline: float) -> None:
    """Wait until ``n`` steps are ``suspended`` in the store (committed).

    A poll with a 10 ms sleep: acceptable in a benchmark (not in a test). The callback style
    is already committed when its callback counts (this returns after one query); the async
    style counts itself just before awaiting, i.e. before its parking is committed.
    """
    while True:
        parked = count_suspended(world)
        if parked >= n:
            return
        if time.perf_counter() > deadline:
            raise BenchFailure(f"{style}: only {parked} of {n} steps suspended in the store")
        time.sleep(0.01)


def check_loaded(world: World, plan_id: str, style: str) -> bool:
    plan = world.load(plan_id)
    step = plan.steps[RUN_STEP]
    key = "event" if style == "callback" else "got"
    return (
        (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        and step.state == StepState.SUCCESS
        and plan.actions[step.action_id].output == {key: "go"}
    )


# -- report ----------------------------------------------------------------------------------


def machine(workdir: Path) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pykka": version("pykka"),
        "platform": platform.platform(),
        "db_dir": str(workdir),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def print_table(results: list[StyleResult]) -> None:
    columns = [
        ("style", 9, lambda r: r.style),
        ("N", 7, lambda r: f"{r.n:,}"),
        ("threads", 8, lambda r: f"{r.threads_waiting}"),
        ("RSS MB", 8, lambda r: f"{r.rss_waiting_mb:.1f}"),
        ("KB/step", 8, lambda r: f"{r.kb_per_step:.2f}"),
        ("trig+park s", 12, lambda r: f"{r.trigger_park_s:.2f}"),
        ("p50 ms", 9, lambda r: f"{r.event_p50_ms:.1f}"),
        ("p99 ms", 9, lambda r: f"{r.event_p99_ms:.1f}"),
        ("events/s", 9, lambda r: f"{r.events_per_s:,.0f}"),
        ("all ok", 7, lambda r: "yes" if r.all_success else "NO"),
    ]
    header = " ".join(f"{name:>{width}}" for name, width, _ in columns)
    print(header)
    print("-" * len(header))
    for r in results:
        print(" ".join(f"{get(r):>{width}}" for _, width, get in columns))


def verdicts(r: StyleResult) -> list[tuple[str, str, bool]]:
    """Return the W4 acceptance checks of one style: (key, text, passed)."""
    return [
        (
            "threads",
            f"threads while waiting {r.threads_waiting} <= {MAX_THREADS}",
            r.threads_waiting <= MAX_THREADS,
        ),
        (
            "kb_per_step",
            f"RSS per suspended step {r.kb_per_step:.2f} KB <= {MAX_KB_PER_STEP:.0f} KB",
            r.kb_per_step <= MAX_KB_PER_STEP,
        ),
        ("all_success", f"all {r.n:,} plans stopped/success", r.all_success),
    ]


def design_events(r: StyleResult) -> list[tuple[str, bool]]:
    """Return DESIGN.md's "Events" targets that this run also speaks to (information only).

    Its latency targets (p50 <= 100 us, p99 <= 1 ms) are for a single event, not for a
    burst of N events in flight at once, so they are not compared here.
    """
    growth = r.rss_waiting_mb - r.rss_baseline_mb
    scale = 10_000 / r.n
    return [
        (
            f"10,000 suspended steps <= 60 MB in all: {growth * scale:.1f} MB"
            + ("" if r.n == 10_000 else f" (scaled from {r.n:,})"),
            growth * scale <= 60,
        ),
        (
            f"burst of events >= 30,000 events/s: {r.events_per_s:,.0f} events/s",
            r.events_per_s >= 30_000,
        ),
    ]


def run_here(style: str, n: int, workdir: Path) -> tuple[StyleResult | None, str | None]:
    """Run one style in this process; return its result and the failure, if any."""
    try:
        result = run_style(style, n, workdir)
    except (BenchFailure, TimeoutError) as exc:
        return None, str(exc) or repr(exc)
    print(
        f"  {style}: parked {n:,} in {result.trigger_park_s:.2f} s, "
        f"{result.rss_waiting_mb - result.rss_baseline_mb:.1f} MB over baseline, "
        f"{result.threads_waiting} threads; events done at {result.events_per_s:,.0f}/s",
        flush=True,
    )
    return result, result.error


def run_child(style: str, n: int, workdir: Path) -> tuple[StyleResult | None, str | None]:
    """Run one style in a fresh interpreter, so that its RSS does not reuse memory that an
    earlier style freed (the allocator keeps it: RSS stays up after `World.stop` although
    the Python heap is back to its size before the run)."""
    out = workdir / f"child-{style}.json"
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--style",
            style,
            "--n",
            str(n),
            "--json",
            str(out),
            "--dir",
            str(workdir),
        ],
        check=False,
    )
    if not out.exists():
        return None, f"{style}: the child process exited {done.returncode} without a result"
    payload = json.loads(out.read_text())
    result = StyleResult(**payload["result"]) if payload["result"] else None
    return result, payload["error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--n", type=int, help="plans per style (overrides --sizes)")
    parser.add_argument("--style", choices=[*STYLES, "both"], default="both")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run both styles in this process (the second one's RSS then reuses freed memory)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else SIZES[args.sizes]
    if n < 1:
        parser.error("--n must be >= 1")
    styles = list(STYLES) if args.style == "both" else [args.style]
    if args.child:  # one style for a parent run: its result as JSON, no report
        result, error = run_here(styles[0], n, args.dir)
        args.json.write_text(
            json.dumps({"result": asdict(result) if result else None, "error": error})
        )
        return 0 if error is None else 1
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-w4-", dir=args.dir))
    info = machine(workdir)
    separate = len(styles) > 1 and not args.in_process
    print(
        f"machine: nproc={info['nproc']} python={info['python']} sqlite={info['sqlite']} "
        f"pykka={info['pykka']} loadavg={' '.join(info['loadavg'])}; databases in {workdir}"
    )
    print(
        f"W4: N={n:,} plans per style, styles={','.join(styles)}"
        f" ({'one process per style' if separate else 'in this process'})"
    )
    results: list[StyleResult] = []
    failures: list[str] = []
    try:
        for style in styles:
            result, error = (run_child if separate else run_here)(style, n, workdir)
            if result is not None:
                results.append(result)
            if error is not None:
                failures.append(error)
                print(f"FAILED: {error}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(results)
    for r in results:
        print(
            f"{r.style}: RSS start {r.rss_start_mb:.1f} MB, baseline {r.rss_baseline_mb:.1f} MB, "
            f"all waiting {r.rss_waiting_mb:.1f} MB (+{r.rss_waiting_mb - r.rss_baseline_mb:.1f});"
            f" OS threads {r.os_threads_waiting}; triggers returned after {r.trigger_s:.2f} s;"
            f" sends returned after {r.send_s:.2f} s; latency max {r.event_max_ms:.1f} ms;"
            f" threads at end {r.threads_end}, after stop {r.threads_after_stop}"
        )
        if "events_commits" in r.commits:
            c = r.commits
            print(
                f"  persistence: parking {c['park_commits']:,} commits for {c['park_records']:,}"
                f" Persist messages; events {c['events_commits']:,} commits for {c['events_records']:,}"
                f" messages ({c['events_records'] / r.n:.1f} per event); raw sqlite3 commit in"
                f" this run: {r.floor_commit_ms:.2f} ms"
            )
        print(f"  threads while waiting: {r.thread_groups}")
        for _, text, ok in verdicts(r):
            print(f"  {'PASS' if ok else 'FAIL'}: {text}")
        for text, ok in design_events(r):
            print(f"  (info, DESIGN.md events target) {'met' if ok else 'not met'}: {text}")
    failure = "; ".join(failures) if failures else None
    if len(results) != len(styles) and failure is None:
        failure = "a style produced no result"
    if args.json is not None:
        payload = {
            "machine": info,
            "n": n,
            "sizes": args.sizes if args.n is None else None,
            "separate_processes": separate,
            "ok": failure is None,
            "error": failure,
            "targets": {"max_threads": MAX_THREADS, "max_kb_per_step": MAX_KB_PER_STEP},
            "passed": {r.style: {key: ok for key, _, ok in verdicts(r)} for r in results},
            "results": {r.style: asdict(r) for r in results},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
