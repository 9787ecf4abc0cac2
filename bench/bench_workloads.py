"""End-to-end workloads W1-W3 on SQLite, each next to the raw SQLite floor of the same run.

Every measurement runs on a fresh SQLite file in a temporary directory with the default
durability (WAL, ``synchronous=FULL``), in one process, in this order:

1. ``floor-single``: raw ``sqlite3``, one UPSERT per step, each its own commit -> commits/s.
   The baseline every ratio is computed against.
2. ``floor-batched``: the same changes, 64 per commit (``executemany``) -> rows/s.
3. ``W1``: 200 plans x 10 sequential no-op steps, triggered from a ``ThreadPoolExecutor(16)``
   (plans triggered from several threads share commits), then all waited for.
   ``W1-serial``: the same, triggered from one thread. ``W1-pool32``: W1 with 32 workers
   instead of the default 5 (a step is ``running`` only while it holds a worker, so the
   pool bounds how many steps are in flight). ``W1-pinned`` (Linux, 2+ CPUs): W1
   with this process pinned to one CPU and the writer process to the others, a deployment
   choice rather than a default (see `w1_pinned`).
4. ``W2``: one plan, 1,000 concurrent no-op steps, then a join step.
5. ``W3``: 100 plans: step, 5 concurrent steps sleeping 10 ms each, step; ``pool_size=50``.

Wall time runs from the first trigger to the last ``wait()``; outside it: world start and stop,
starting the caller threads (`started_callers`) and a full garbage collection (`settle`,
before every timed window, floors included). Steps/s counts run steps. Each workload is repeated ``--repeat`` times (a fresh file and world
each time) and the median is reported. Every plan must end ``stopped``/``success`` with all its
run steps ``success`` (checked on the plan reloaded from the store), else the exit code is 1.

    .venv/bin/python bench/bench_workloads.py [--sizes full|small] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydynflow import Action, Phase, PlanState, Result, StepState, World  # noqa: E402

SUBMIT_THREADS = 16
FLOOR_BATCH = 64
WAIT_TIMEOUT = 300.0  # seconds per plan: a hang fails the run instead of blocking forever
SLEEP_S = 0.01

SIZES: dict[str, dict[str, int]] = {
    "full": {
        "floor_changes": 2_000,
        "w1_plans": 200,
        "w1_steps": 10,
        "w2_steps": 1_000,
        "w3_plans": 100,
        "w3_fanout": 5,
        "w3_pool": 50,
    },
    "small": {
        "floor_changes": 200,
        "w1_plans": 10,
        "w1_steps": 10,
        "w2_steps": 50,
        "w3_plans": 5,
        "w3_fanout": 5,
        "w3_pool": 10,
    },
}


# -- the bench's actions ---------------------------------------------------------------------


class NoOp(Action):
    """A step that does nothing."""

    def run(self) -> None:
        pass


class Chain(Action):
    """W1: ``steps`` no-op steps in sequence."""

    def plan(self, steps: int = 10) -> None:
        with self.sequence():
            for i in range(steps):
                self.plan_action(NoOp, {"i": i})


class Join(Action):
    """W2's last step; its input references nothing, the sequence orders it."""

    def run(self) -> None:
        pass


class FanOutJoin(Action):
    """W2: ``steps`` concurrent no-op steps, then a join."""

    def plan(self, steps: int = 1_000) -> None:
        with self.sequence():
            with self.concurrence():
                for i in range(steps):
                    self.plan_action(NoOp, {"i": i})
            self.plan_action(Join, {"steps": steps})


class Sleep(Action):
    """A step sleeping 10 ms: the workload (stand-in for I/O), not synchronisation."""

    def run(self) -> None:
        time.sleep(SLEEP_S)


class IoFanOut(Action):
    """W3: a step, ``fanout`` concurrent 10 ms steps, a step."""

    def plan(self, fanout: int = 5) -> None:
        with self.sequence():
            self.plan_action(NoOp, {"i": "first"})
            with self.concurrence():
                for i in range(fanout):
                    self.plan_action(Sleep, {"i": i})
            self.plan_action(NoOp, {"i": "last"})


# -- measurement -----------------------------------------------------------------------------


class BenchFailure(Exception):
    """A plan did not succeed (or did not finish): the figures would be meaningless."""


@dataclass
class Run:
    """One measured run of one workload."""

    wall_s: float
    count: int  # steps (workloads) or rows (floors) done in wall_s
    rss_mb: float
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.wall_s


def peak_rss_mb() -> float:
    """Return the process's peak RSS so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def fresh_db(workdir: Path, name: str) -> Path:
    """Return the path of a fresh directory's database file (nothing left from other runs)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    return directory / "bench.db"


def floor_connection(path: Path) -> sqlite3.Connection:
    """Open a bare sqlite3 connection with the engine's default durability."""
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    assert mode.lower() == "wal", mode
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE steps (plan_id TEXT, id INT, state TEXT, output BLOB,"
        " PRIMARY KEY (plan_id, id))"
    )
    return conn


UPSERT = (
    "INSERT INTO steps (plan_id, id, state, output) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (plan_id, id) DO UPDATE SET state = excluded.state, output = excluded.output"
)


def floor_rows(changes: int, steps_per_plan: int) -> list[tuple[str, int, str, bytes]]:
    """Return ``changes`` step rows: one durable state change per step, as W1 makes."""
    return [
        (f"plan-{n // steps_per_plan:06d}", n % steps_per_plan, "success", b"{}")
        for n in range(changes)
    ]


def floor_single(workdir: Path, size: dict[str, int]) -> Run:
    rows = floor_rows(size["floor_changes"], size["w1_steps"])
    conn = floor_connection(fresh_db(workdir, "floor-single"))
    try:
        settle()
        start = time.perf_counter()
        for row in rows:
            conn.execute("BEGIN")
            conn.execute(UPSERT, row)
            conn.execute("COMMIT")
        wall = time.perf_counter() - start
        (stored,) = conn.execute("SELECT count(*) FROM steps").fetchone()
    finally:
        conn.close()
    if stored != len(rows):
        raise BenchFailure(f"floor-single stored {stored} rows, expected {len(rows)}")
    return Run(wall, len(rows), peak_rss_mb(), threading.active_count(), {"commits": len(rows)})


def floor_batched(workdir: Path, size: dict[str, int]) -> Run:
    rows = floor_rows(size["floor_changes"], size["w1_steps"])
    conn = floor_connection(fresh_db(workdir, "floor-batched"))
    commits = 0
    try:
        settle()
        start = time.perf_counter()
        for first in range(0, len(rows), FLOOR_BATCH):
            conn.execute("BEGIN")
            conn.executemany(UPSERT, rows[first : first + FLOOR_BATCH])
            conn.execute("COMMIT")
            commits += 1
        wall = time.perf_counter() - start
        (stored,) = conn.execute("SELECT count(*) FROM steps").fetchone()
    finally:
        conn.close()
    if stored != len(rows):
        raise BenchFailure(f"floor-batched stored {stored} rows, expected {len(rows)}")
    return Run(wall, len(rows), peak_rss_mb(), threading.active_count(), {"commits": commits})


def persistence_counters(world: World) -> dict[str, float]:
    """Return the persistence actor's commits and records, and the time its writer process
    spent on transactions (if these internals still exist)."""
    try:
        proxy = world._runtime.persistence.proxy()  # type: ignore[union-attr]
        counters = {"commits": int(proxy.commits.get()), "records": int(proxy.records.get())}
        busy = getattr(proxy.writer.get(), "busy_seconds", None)
        if busy is not None:
            counters["writer_busy_s"] = float(busy)
        return counters
    except Exception:
        return {}


def check_plans(world: World, plan_ids: list[str], run_steps: int, what: str) -> None:
    """Fail unless every plan, reloaded from the store, succeeded with all its run steps."""
    for plan_id in plan_ids:
        plan = world.load(plan_id)
        if plan.state != PlanState.STOPPED or plan.result != Result.SUCCESS:
            errors = [str(s.error) for s in plan.steps.values() if s.error is not None]
            raise BenchFailure(
                f"{what}: plan {plan_id} ended {plan.state}/{plan.result}: {errors[:3]}"
            )
        done = [
            s for s in plan.steps.values() if s.phase == Phase.RUN and s.state == StepState.SUCCESS
        ]
        if len(done) != run_steps:
            raise BenchFailure(
                f"{what}: plan {plan_id} has {len(done)} successful run steps, expected {run_steps}"
            )


def settle() -> None:
    """Run a full garbage collection before a timed window starts.

    The workloads run one after another in one process. The objects earlier runs allocated
    and that survived count toward the collector's next full collection (due once the
    survivors of young collections reach a quarter of the old generation), which can then
    fall due inside whichever window comes next: a pause of ~30 ms on these VMs, charged to
    a workload that did not cause it. After a full collection only the window's own objects
    count. (pydynflow leaves no garbage behind: a `gc.collect()` after each workload finds
    none.) The collections the window's own work triggers stay in it: the collector is not
    disabled.
    """
    gc.collect()


def started_callers() -> ThreadPoolExecutor:
    """Return a ``ThreadPoolExecutor(SUBMIT_THREADS)`` whose threads are all running.

    The callers stand for a daemon's request threads, which exist before requests come.
    ``ThreadPoolExecutor`` starts a thread per ``submit`` until it has ``max_workers``, and
    each start waits for the new thread to get the interpreter lock. Inside the timed window
    (so until 2026-11-27), the bench's own 16 thread starts cost 20-45 ms of W1's first
    40 ms on this project's 2-vCPU VMs: time no engine spends.
    """
    pool = ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="bench-submit")
    everyone = threading.Barrier(SUBMIT_THREADS + 1)
    waiting = [pool.submit(everyone.wait) for _ in range(SUBMIT_THREADS)]
    everyone.wait()  # every caller thread is up (one task each: none was reused)
    for future in waiting:
        future.result()
    return pool


def run_world(
    workdir: Path,
    name: str,
    triggers: list[Callable[[World], Any]],
    run_steps: int,
    *,
    parallel: bool,
    pool_size: int = 5,
    url: str | None = None,
) -> Run:
    """Start a world on a fresh file, trigger every plan, wait for all, check them, stop.

    ``triggers`` are callables ``world -> Triggered``; with ``parallel`` they are submitted
    from a ``ThreadPoolExecutor(SUBMIT_THREADS)``, else one by one from this thread.
    ``url``: an empty database to use instead of a fresh SQLite file (PostgreSQL).
    """
    url = url or f"sqlite:///{fresh_db(workdir, name)}"
    world = World(url, pool_size=pool_size, auto_execute=False)
    world.start()
    callers = started_callers() if parallel else None
    try:
        settle()
        start = time.perf_counter()
        if callers is not None:
            futures = [callers.submit(trigger, world) for trigger in triggers]
            triggered = [future.result() for future in futures]
        else:
            triggered = [trigger(world) for trigger in triggers]
        ended = [t.wait(WAIT_TIMEOUT) for t in triggered]
        wall = time.perf_counter() - start
        # The bench's caller threads are not the engine's (they exited here before 2026-11-27).
        threads = threading.active_count() - (SUBMIT_THREADS if callers is not None else 0)
        extra: dict[str, Any] = {"pool_size": pool_size, **persistence_counters(world)}
        for t, plan in zip(triggered, ended, strict=True):
            if not t.planned:
                raise BenchFailure(f"{name}: plan {t.id} failed planning: {t.error}")
            if plan.state != PlanState.STOPPED or plan.result != Result.SUCCESS:
                raise BenchFailure(f"{name}: plan {t.id} ended {plan.state}/{plan.result}")
        check_plans(world, [t.id for t in triggered], run_steps, name)
    finally:
        if callers is not None:
            callers.shutdown()
        world.stop(timeout=WAIT_TIMEOUT)
    extra["threads_after_stop"] = threading.active_count()
    total_steps = run_steps * len(triggers)
    return Run(wall, total_steps, peak_rss_mb(), threads, extra)


W1_WIDE_POOL = 32


def w1(
    workdir: Path,
    size: dict[str, int],
    *,
    parallel: bool,
    pool_size: int = 5,
    url: str | None = None,
) -> Run:
    steps = size["w1_steps"]
    triggers = [lambda world: world.trigger(Chain, steps) for _ in range(size["w1_plans"])]
    name = "W1" if parallel else "W1-serial"
    if pool_size != 5:
        name += f"-pool{pool_size}"
    return run_world(
        workdir, name, triggers, steps, parallel=parallel, pool_size=pool_size, url=url
    )


def pinnable() -> bool:
    """Return whether this machine can run `w1_pinned` (Linux, two CPUs or more allowed)."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def w1_pinned(workdir: Path, size: dict[str, int]) -> Run:
    """W1 with this process on one CPU and the writer process on the others.

    Not a default: the deployment docs/performance.md suggests for a daemon on a small
    machine (``taskset -c 0`` and ``PYDYNFLOW_WRITER_CPUS``). The world's threads then hand
    the interpreter lock to each other on one CPU, whose caches hold what they work on.
    """
    allowed = os.sched_getaffinity(0)
    world_cpu = min(allowed)
    os.environ["PYDYNFLOW_WRITER_CPUS"] = ",".join(map(str, sorted(allowed - {world_cpu})))
    os.sched_setaffinity(0, {world_cpu})  # threads started from now on inherit it
    try:
        run = w1(workdir, size, parallel=True)
    finally:
        os.sched_setaffinity(0, allowed)
        del os.environ["PYDYNFLOW_WRITER_CPUS"]
    return run


def w2(workdir: Path, size: dict[str, int], url: str | None = None) -> Run:
    steps = size["w2_steps"]
    triggers = [lambda world: world.trigger(FanOutJoin, steps)]
    return run_world(workdir, "W2", triggers, steps + 1, parallel=False, url=url)


def w3(workdir: Path, size: dict[str, int], url: str | None = None) -> Run:
    fanout, plans, pool = size["w3_fanout"], size["w3_plans"], size["w3_pool"]
    triggers = [lambda world: world.trigger(IoFanOut, fanout) for _ in range(plans)]
    run = run_world(workdir, "W3", triggers, fanout + 2, parallel=True, pool_size=pool, url=url)
    # Lower bounds: a plan's 5 sleeps overlap at best (10 ms); the pool runs P at a time.
    run.extra["ideal_wall_s"] = max(SLEEP_S, plans * fanout * SLEEP_S / pool)
    run.extra["serial_sleep_s"] = plans * fanout * SLEEP_S
    return run


# -- report ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """The medians of one workload's runs."""

    name: str
    unit: str
    wall_s: float
    rate: float
    ratio: float
    rss_mb: float
    threads: int
    runs: list[dict[str, Any]]
    extra: dict[str, Any]


def summarise(
    name: str, unit: str, runs: list[Run], baseline: float | None, floor: list[Run]
) -> Summary:
    """Return the medians of ``runs``; ``ratio`` is median rate / median floor-single rate."""
    extra: dict[str, Any] = {}
    keys = {
        key for run in runs for key, value in run.extra.items() if isinstance(value, int | float)
    }
    for key in sorted(keys):
        extra[key] = statistics.median(run.extra[key] for run in runs if key in run.extra)
    # The same ratio per round (against that round's floor), to show how much it swings.
    extra["round_ratios"] = [run.rate / base.rate for run, base in zip(runs, floor, strict=False)]
    rate = statistics.median(run.rate for run in runs)
    return Summary(
        name=name,
        unit=unit,
        wall_s=statistics.median(run.wall_s for run in runs),
        rate=rate,
        ratio=rate / baseline if baseline else 0.0,
        rss_mb=max(run.rss_mb for run in runs),
        threads=max(run.threads for run in runs),
        runs=[{"rate": run.rate, **asdict(run)} for run in runs],
        extra=extra,
    )


def filesystem(path: Path) -> str:
    """Return the type of the filesystem ``path`` is on (from /proc/mounts), or "?"."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    resolved = str(path.resolve())
    best = ("", "?")
    for point, kind in mounts:
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, kind)
    return best[1]


def machine(workdir: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "db_dir": str(workdir),
        "filesystem": filesystem(workdir),
    }


def print_table(results: list[Summary]) -> None:
    header = f"{'workload':<14} {'wall s':>8} {'rate':>10} {'unit':<9} {'x floor':>8} {'peak RSS MB':>12} {'threads':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<14} {r.wall_s:>8.3f} {r.rate:>10,.0f} {r.unit:<9} {r.ratio:>8.2f} "
            f"{r.rss_mb:>12.1f} {r.threads:>8d}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    size = SIZES[args.sizes]
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-bench-", dir=args.dir))
    info = machine(workdir)
    print(
        f"machine: nproc={info['nproc']} python={info['python']} sqlite={info['sqlite']} "
        f"({info['platform']}); databases in {workdir} ({info['filesystem']})"
    )
    print(
        f"sizes={args.sizes} repeat={args.repeat} (medians); W1 {size['w1_plans']} plans x "
        f"{size['w1_steps']} steps; W2 {size['w2_steps']} steps + join; W3 {size['w3_plans']} "
        f"plans, pool_size={size['w3_pool']}"
    )
    workloads: list[tuple[str, str, Callable[[], Run]]] = [
        ("floor-single", "commits/s", lambda: floor_single(workdir, size)),
        ("floor-batched", "rows/s", lambda: floor_batched(workdir, size)),
        ("W1", "steps/s", lambda: w1(workdir, size, parallel=True)),
        ("W1-serial", "steps/s", lambda: w1(workdir, size, parallel=False)),
        (
            f"W1-pool{W1_WIDE_POOL}",
            "steps/s",
            lambda: w1(workdir, size, parallel=True, pool_size=W1_WIDE_POOL),
        ),
        *([("W1-pinned", "steps/s", lambda: w1_pinned(workdir, size))] if pinnable() else []),
        ("W2", "steps/s", lambda: w2(workdir, size)),
        ("W3", "steps/s", lambda: w3(workdir, size)),
    ]
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in workloads}
    failure: BaseException | None = None
    try:
        # Rounds: every workload once per round, in order, so that each workload and the
        # floor it is compared with are measured close together (the disk's fsync latency
        # drifts during a run).
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
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    floor_runs = runs["floor-single"]
    baseline = statistics.median(run.rate for run in floor_runs) if floor_runs else None
    results = [
        summarise(name, unit, runs[name], baseline, floor_runs)
        for name, unit, _ in workloads
        if runs[name]
    ]
    print()
    print_table(results)
    by_name = {r.name: r for r in results}
    if "W1" in by_name:
        w1r = by_name["W1"].extra
        if "commits" in w1r:
            busy = w1r.get("writer_busy_s")
            print(
                f"W1 persistence actor: {w1r['commits']:.0f} commits, {w1r['records']:.0f} "
                f"records (median per run; planning commits included)"
                + ("" if busy is None else f"; writer process busy {busy:.3f} s")
            )
        rounds = ", ".join(f"{r:.2f}" for r in by_name["W1"].extra["round_ratios"])
        print(
            f"W1 target: >= 1.5x floor-single; measured {by_name['W1'].ratio:.2f}x "
            f"(per round: {rounds})"
        )
    if "W1-pinned" in by_name:
        rounds = ", ".join(f"{r:.2f}" for r in by_name["W1-pinned"].extra["round_ratios"])
        print(
            f"W1-pinned (this process on one CPU, the writer on the others; not a default): "
            f"{by_name['W1-pinned'].ratio:.2f}x floor-single (per round: {rounds})"
        )
    if "W3" in by_name:
        w3r = by_name["W3"]
        print(
            f"W3: pool_size={w3r.extra['pool_size']:.0f}, wall {w3r.wall_s:.3f} s, ideal "
            f"~{w3r.extra['ideal_wall_s']:.3f} s, sleeps back to back "
            f"{w3r.extra['serial_sleep_s']:.3f} s"
        )
    for r in results:
        if "threads_after_stop" in r.extra:
            print(
                f"{r.name}: threads at end {r.threads}, after world.stop "
                f"{r.extra['threads_after_stop']:.0f}"
            )
    if args.json is not None:
        payload = {
            "machine": info,
            "sizes": args.sizes,
            "size": size,
            "repeat": args.repeat,
            "ok": failure is None,
            "error": None if failure is None else str(failure),
            "results": {r.name: asdict(r) for r in results},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
