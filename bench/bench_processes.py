"""Benchmark `ProcessWorkers` (forkserver workers) against `ThreadWorkers`, in one run.

Measures:

* worker death: a pool of one worker runs a job that sleeps; the benchmark SIGKILLs the worker
  from outside at t0. *detected* = t0 to the job's ``on_done(None, WorkerDied)``; *restarted*
  = t0 to the worker count being back to size (polled every 0.2 ms from detection on);
  *serving* = t0 to a job submitted then having run on the replacement. Medians (and max)
  over ``--kills``.
* trivial job round trip (one job in flight, submit to ``on_done`` seen by the caller), p50 and
  p99 over ``--trips``, with 2 workers, for ProcessWorkers and the ThreadWorkers baseline:
  ``operator.neg(1)`` (importable: pickled by reference) and ``execute_run`` of a no-op action
  defined in this ``__main__`` (dill pickles the class by value, as for a user's script).
* jobs/s: ``--burst`` trivial jobs submitted at once, 2 workers, both pools.

Targets (DESIGN.md, "Performance targets"): death detected <= 50 ms, restarted <= 100 ms,
trivial job p50 <= 500 us. A missed target prints FAIL (exit code 0: figures swing between
runs); exit code 1 only if a job came back wrong.

    .venv/bin/python bench/bench_processes.py [--kills 20] [--trips 2000] [--burst 20000]
                                              [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydynflow import Action  # noqa: E402
from pydynflow.action import RUN  # noqa: E402
from pydynflow.adapters.executors.processes import ProcessWorkers, WorkerDied  # noqa: E402
from pydynflow.adapters.executors.threads import ThreadWorkers  # noqa: E402
from pydynflow.phases import execute_run  # noqa: E402
from pydynflow.states import StepState  # noqa: E402

WAIT = 30.0


class Noop(Action):
    """An action whose run does nothing (defined in ``__main__``: sent by value)."""

    def run(self) -> None:
        self.output["ok"] = True


def call(pool: Any, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """Run one job and wait for it; return ``(result, error)``."""
    done = threading.Event()
    box: list[Any] = []

    def on_done(result: Any, error: Any) -> None:
        box.append((result, error))
        done.set()

    pool.submit(fn, args, on_done)
    if not done.wait(WAIT):
        raise SystemExit(f"a job did not finish in {WAIT} s")
    return box[0]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def bench_deaths(kills: int) -> dict[str, Any]:
    """SIGKILL the only worker of a pool while it runs a job, ``kills`` times."""
    detected, restarted, serving = [], [], []
    with ProcessWorkers(1, "bench-deaths") as pool:
        pid, _ = call(pool, os.getpid)
        died = threading.Event()
        box: list[Any] = []  # (time, error) of the killed job's on_done

        def on_done(result: Any, error: Any) -> None:
            box.append((time.perf_counter(), error))
            died.set()

        for _ in range(kills):
            died.clear()
            box.clear()
            pool.submit(time.sleep, (60,), on_done)
            time.sleep(0.005)  # let the worker take the job
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            if not died.wait(WAIT) or not isinstance(box[0][1], WorkerDied):
                raise SystemExit(f"the killed job did not fail with WorkerDied: {box}")
            detected.append(box[0][0] - t0)
            while pool.workers != 1:  # the dead worker left the count before on_done
                time.sleep(0.0002)
            restarted.append(time.perf_counter() - t0)
            new_pid, _ = call(pool, os.getpid)  # runs on the replacement
            serving.append(time.perf_counter() - t0)
            if new_pid == pid:
                raise SystemExit("the job ran on the killed worker")
            pid = new_pid
    return {
        "kills": kills,
        "detected_ms_p50": ms(statistics.median(detected)),
        "detected_ms_max": ms(max(detected)),
        "restarted_ms_p50": ms(statistics.median(restarted)),
        "restarted_ms_max": ms(max(restarted)),
        "serving_ms_p50": ms(statistics.median(serving)),
        "serving_ms_max": ms(max(serving)),
    }


def round_trips(pool: Any, fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> list[float]:
    done = threading.Event()
    box: list[Any] = []

    def on_done(result: Any, error: Any) -> None:
        box.append(error)
        done.set()

    times = []
    for _ in range(n):
        done.clear()
        started = time.perf_counter()
        pool.submit(fn, args, on_done)
        done.wait(WAIT)
        times.append(time.perf_counter() - started)
    if any(error is not None for error in box) or len(box) != n:
        raise SystemExit(f"round trips failed: {[e for e in box if e is not None][:3]}")
    return times


def burst(pool: Any, n: int) -> float:
    """Submit ``n`` trivial jobs at once; return jobs/s until the last ``on_done``."""
    left = [n]
    lock = threading.Lock()
    done = threading.Event()

    def on_done(result: Any, error: Any) -> None:
        if error is not None or result != -1:
            raise SystemExit(f"a burst job failed: {result!r} {error!r}")
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()

    started = time.perf_counter()
    for _ in range(n):
        pool.submit(operator.neg, (1,), on_done)
    if not done.wait(WAIT * 4):
        raise SystemExit(f"{left[0]} burst jobs never finished")
    return n / (time.perf_counter() - started)


def noop_action() -> Noop:
    return Noop(id=1, execution_plan_id="bench", input={}, phase=RUN)


def bench_jobs(trips: int, jobs: int) -> dict[str, Any]:
    """Round trips and bursts on 2 workers, processes then threads."""
    results: dict[str, Any] = {}
    for label, make in (("processes", ProcessWorkers), ("threads", ThreadWorkers)):
        pool = make(2, f"bench-{label}")
        try:
            outcome, error = call(pool, execute_run, noop_action())
            if error is not None or outcome.state is not StepState.SUCCESS:
                raise SystemExit(f"execute_run failed on {label}: {outcome} {error}")
            round_trips(pool, operator.neg, (1,), 200)  # warm up
            trivial = sorted(round_trips(pool, operator.neg, (1,), trips))
            action = sorted(round_trips(pool, execute_run, (noop_action(),), trips // 4))
            results[label] = {
                "trivial_us_p50": us(statistics.median(trivial)),
                "trivial_us_p99": us(trivial[int(len(trivial) * 0.99)]),
                "action_us_p50": us(statistics.median(action)),
                "action_us_p99": us(action[int(len(action) * 0.99)]),
                "jobs_per_s": round(burst(pool, jobs)),
            }
        finally:
            pool.shutdown(wait=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    first = ProcessWorkers(1, "bench-first")  # the fork server starts here
    first_start = time.perf_counter() - started
    first.shutdown(wait=True)
    deaths = bench_deaths(args.kills)
    jobs = bench_jobs(args.trips, args.burst)
    processes, threads = jobs["processes"], jobs["threads"]

    print(f"machine: {os.cpu_count()} cpus, Python {sys.version.split()[0]}")
    print(f"first pool start (fork server + 1 worker): {ms(first_start)} ms")
    print(f"\nworker death, SIGKILL x {deaths['kills']} (median / max)")
    checks = [
        ("detected", "detected_ms", 50.0),
        ("restarted", "restarted_ms", 100.0),
        ("serving a job again", "serving_ms", None),
    ]
    failed = False
    for label, key, target in checks:
        p50, worst = deaths[f"{key}_p50"], deaths[f"{key}_max"]
        verdict = "" if target is None else ("PASS" if p50 <= target else "FAIL")
        failed |= verdict == "FAIL"
        goal = f"target <= {target:g} ms" if target is not None else ""
        print(f"  {label:<22}{p50:>8.2f} ms{worst:>9.2f} ms   {goal:<18}{verdict}")
    print("\n2 workers                      processes     threads   ratio   target")
    rows = [
        ("trivial job p50 (us)", "trivial_us_p50", 500.0),
        ("trivial job p99 (us)", "trivial_us_p99", None),
        ("no-op action p50 (us)", "action_us_p50", None),
        ("no-op action p99 (us)", "action_us_p99", None),
        ("burst jobs/s", "jobs_per_s", None),
    ]
    for label, key, target in rows:
        mine, base = processes[key], threads[key]
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g} " + ("PASS" if mine <= target else "FAIL")
            failed |= mine > target
        print(f"  {label:<26}{mine:>12,.1f}{base:>12,.1f}{mine / base:>8.2f}   {verdict}")
    print("\nall targets met" if not failed else "\nsome targets missed (FAIL above)")
    if args.json is not None:
        payload = {"first_start_ms": ms(first_start), "deaths": deaths, "jobs": jobs}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
