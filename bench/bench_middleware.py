"""What middleware costs: W1 on a world with 3 world middlewares next to W1 on one without.

W1 (see ``bench_workloads.py``): 200 plans x 10 sequential no-op steps, triggered from 16
threads, then all waited for, on a fresh SQLite file (WAL, ``synchronous=FULL``) per run.
``W1-middleware`` runs the same with ``World(middleware=[M1, M2, M3])``: each middleware
defines ``plan``, ``run`` and ``finalize`` hooks that only call ``call_next``, so every
action is planned and run through 3 layers (W1's actions have no finalize phase). The two
alternate, ``--repeat`` rounds of both (a fresh file and world each time), so that both see
the same disk; the medians and their ratio are reported. Target: ratio >= 0.8. Every plan
must end ``stopped``/``success`` (checked on the plan reloaded from the store), else the exit
code is 1.

    .venv/bin/python bench/bench_middleware.py [--sizes full|small] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_workloads as workloads  # noqa: E402

from pydynflow import Middleware, World  # noqa: E402

TARGET = 0.8


class PassOn(Middleware):
    """Hooks that only call the next layer."""

    def plan(self, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        return call_next(*args, **kwargs)

    def run(self, call_next: Any, event: Any) -> Any:
        return call_next(event)

    def finalize(self, call_next: Any) -> Any:
        return call_next()


class M1(PassOn):
    pass


class M2(PassOn):
    pass


class M3(PassOn):
    pass


MIDDLEWARE = [M1, M2, M3]


def w1(workdir: Path, size: dict[str, int], middleware: list[type]) -> workloads.Run:
    """Run W1 on a fresh file, on a world with ``middleware``; check every plan."""
    name = "W1-middleware" if middleware else "W1"
    steps = size["w1_steps"]
    url = f"sqlite:///{workloads.fresh_db(workdir, name)}"
    world = World(url, auto_execute=False, middleware=middleware)
    world.start()
    callers = workloads.started_callers()
    try:
        workloads.settle()
        start = time.perf_counter()
        futures = [
            callers.submit(world.trigger, workloads.Chain, steps) for _ in range(size["w1_plans"])
        ]
        triggered = [future.result() for future in futures]
        for one in triggered:
            one.wait(workloads.WAIT_TIMEOUT)
        wall = time.perf_counter() - start
        workloads.check_plans(world, [t.id for t in triggered], steps, name)
    finally:
        callers.shutdown()
        world.stop(timeout=workloads.WAIT_TIMEOUT)
    return workloads.Run(wall, steps * size["w1_plans"], workloads.peak_rss_mb(), 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", choices=sorted(workloads.SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of both (median)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    size = workloads.SIZES[args.sizes]
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-bench-", dir=args.dir))
    info = workloads.machine(workdir)
    print(
        f"machine: nproc={info['nproc']} python={info['python']} sqlite={info['sqlite']}; "
        f"W1 {size['w1_plans']} plans x {size['w1_steps']} steps, {args.repeat} rounds"
    )
    runs: dict[str, list[workloads.Run]] = {"W1": [], "W1-middleware": []}
    failure: BaseException | None = None
    try:
        for round_ in range(1, args.repeat + 1):
            for name, middleware in (("W1", []), ("W1-middleware", MIDDLEWARE)):
                run = w1(workdir, size, middleware)
                runs[name].append(run)
                print(f"  round {round_}: {name:<14} {run.wall_s:8.3f} s {run.rate:>8,.0f} steps/s")
    except (workloads.BenchFailure, TimeoutError) as exc:
        failure = exc
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rates = {name: [run.rate for run in done] for name, done in runs.items()}
    medians = {name: statistics.median(found) for name, found in rates.items() if found}
    ratio = medians["W1-middleware"] / medians["W1"] if len(medians) == 2 else 0.0
    rounds = [mw / plain for plain, mw in zip(rates["W1"], rates["W1-middleware"], strict=False)]
    print()
    for name, median in medians.items():
        print(f"{name:<14} median {median:>8,.0f} steps/s")
    print(
        f"W1 with 3 middlewares / without: {ratio:.2f}x (target >= {TARGET}x; per round: "
        + ", ".join(f"{r:.2f}" for r in rounds)
        + ")"
    )
    if args.json is not None:
        payload = {
            "machine": info,
            "sizes": args.sizes,
            "size": size,
            "repeat": args.repeat,
            "ok": failure is None,
            "error": None if failure is None else str(failure),
            "middleware": [cls.__name__ for cls in MIDDLEWARE],
            "median_steps_per_s": medians,
            "ratio": ratio,
            "round_ratios": rounds,
            "target": TARGET,
            "runs": {name: [asdict(run) for run in done] for name, done in runs.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
