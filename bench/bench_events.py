"""Events against steps: an event burst next to W1 in the same run, and one event's latency.

Every measurement runs in this process on a fresh SQLite file (WAL, ``synchronous=FULL``, the
default durability) with a default `World` (``pool_size=5``), alternating, ``--repeat``
rounds (medians reported):

- ``W1``: `bench_workloads.w1`: 200 plans x 10 sequential no-op steps, triggered from 16
  threads -> steps/s.
- ``E1-async`` / ``E1-callback``: 200 plans x 10 concurrent steps that each wait for one
  event (``await self.wait_for_event()``, or ``self.suspend()`` then ``run(event)``); once
  all 2,000 steps are stored ``suspended``, 16 threads send each step its event with
  `World.event` (which returns once the event is durable) -> events/s = 2,000 / (first send
  to the last plan finished). The same durable work per step as W1 (a step moves to
  ``running``, then to ``success``; 200 plans end), plus the event itself.
- ``single``: 200 plans of one step each wait for an event; one event at a time, the time
  from `World.event` to the plan finished (`Triggered.wait`) -> p50 / p99 in ms.

The raw SQLite floor of the same run (one durable one-row commit per transaction) is
reported beside them. The claims checked: E1 events/s >= W1 steps/s for each style (issue
22), and the single event's p50 next to DESIGN.md's target (<= 1 ms) as information. Every
plan must end ``stopped``/``success``, else the exit code is 1.

    .venv/bin/python bench/bench_events.py [--sizes full|small] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_workloads  # noqa: E402
from bench_workloads import BenchFailure, fresh_db, settle, started_callers  # noqa: E402

from pydynflow import Action, Phase, PlanState, Result, StepState, World  # noqa: E402

SIZES: dict[str, dict[str, int]] = {
    "full": {"plans": 200, "steps": 10, "single": 200, "floor_changes": 2_000},
    "small": {"plans": 10, "steps": 5, "single": 20, "floor_changes": 200},
}
WAIT_TIMEOUT = 300.0  # seconds: a hang fails the run instead of blocking forever
POLL_S = 0.02  # how often the store is asked whether every step is parked


class AsyncWait(Action):
    """Await one event; keep it in the output."""

    async def run(self) -> None:
        self.output["got"] = await self.wait_for_event()


class CallbackWait(Action):
    """Suspend until an event; keep it in the output."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend()
        self.output["got"] = event


WAITERS: dict[str, type[Action]] = {"async": AsyncWait, "callback": CallbackWait}


class Waiters(Action):
    """``steps`` concurrent steps of ``style`` that each wait for one event."""

    def plan(self, style: str = "async", steps: int = 10) -> None:
        with self.concurrence():
            for i in range(steps):
                self.plan_action(WAITERS[style], {"i": i})


def suspended_steps(world: World) -> int:
    """Return how many steps the store holds ``suspended``."""
    row = world.storage.database.execute_sql(
        "SELECT count(*) FROM dynflow_steps WHERE state = 'suspended'"
    ).fetchone()
    return int(row[0])


def park(world: World, plans: list[Any], expected: int) -> list[tuple[str, int]]:
    """Wait until ``expected`` steps are stored suspended; return (plan id, step id) of each."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while suspended_steps(world) < expected:
        if time.monotonic() > deadline:
            raise BenchFailure(f"only {suspended_steps(world)} of {expected} steps parked")
        time.sleep(POLL_S)  # polls the store: the steps park on the engine's own threads
    targets = []
    for triggered in plans:
        plan = world.load(triggered.id)
        targets.extend(
            (plan.id, step.id)
            for step in plan.steps.values()
            if step.phase == Phase.RUN and step.state == StepState.SUSPENDED
        )
    if len(targets) != expected:
        raise BenchFailure(f"{len(targets)} suspended steps found, expected {expected}")
    return targets


def check(world: World, plans: list[Any], what: str) -> None:
    """Fail unless every plan ended stopped/success with every run step's event in it."""
    for triggered in plans:
        plan = triggered.wait(WAIT_TIMEOUT)
        if plan.state != PlanState.STOPPED or plan.result != Result.SUCCESS:
            raise BenchFailure(f"{what}: plan {plan.id} ended {plan.state}/{plan.result}")
    for triggered in plans[:: max(1, len(plans) // 20)]:  # a sample, reloaded from the store
        plan = world.load(triggered.id)
        for step in plan.steps.values():
            if step.phase == Phase.RUN and step.output.get("got") != "go":
                raise BenchFailure(f"{what}: step {step.id} of {plan.id} got {step.output}")


def e1(workdir: Path, size: dict[str, int], style: str) -> dict[str, Any]:
    """The event burst: park plans x steps, then send every step its event from 16 threads."""
    world = World(f"sqlite:///{fresh_db(workdir, f'E1-{style}')}", auto_execute=False)
    world.start()
    callers = started_callers()
    try:
        plans = list(
            callers.map(
                lambda _: world.trigger(Waiters, style, size["steps"]), range(size["plans"])
            )
        )
        targets = park(world, plans, size["plans"] * size["steps"])
        settle()
        start = time.perf_counter()
        sent = list(callers.map(lambda t: world.event(t[0], t[1], "go"), targets))
        for triggered in plans:
            triggered.wait(WAIT_TIMEOUT)
        wall = time.perf_counter() - start
        if not all(sent):
            raise BenchFailure(f"E1-{style}: an event was not accepted")
        check(world, plans, f"E1-{style}")
        counters = bench_workloads.persistence_counters(world)
    finally:
        callers.shutdown()
        world.stop(timeout=WAIT_TIMEOUT)
    return {"wall_s": wall, "events": len(targets), "per_s": len(targets) / wall, **counters}


def single(workdir: Path, size: dict[str, int]) -> dict[str, Any]:
    """One event at a time to a parked async step: event sent to its plan finished."""
    world = World(f"sqlite:///{fresh_db(workdir, 'single')}", auto_execute=False)
    world.start()
    try:
        plans = [world.trigger(AsyncWait) for _ in range(size["single"])]
        targets = park(world, plans, len(plans))
        settle()
        latencies = []
        for triggered, (plan_id, step_id) in zip(plans, targets, strict=True):
            start = time.perf_counter()
            world.event(plan_id, step_id, "go")
            triggered.wait(WAIT_TIMEOUT)
            latencies.append((time.perf_counter() - start) * 1000)
        check(world, plans, "single")
    finally:
        world.stop(timeout=WAIT_TIMEOUT)
    latencies.sort()
    return {
        "n": len(latencies),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--json", type=Path, help="default: bench/results/events-<UTC>.json")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    size = SIZES[args.sizes]
    w1_size = {**bench_workloads.SIZES["full"], "w1_plans": size["plans"], "w1_steps": 10}
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-events-", dir=args.dir))
    info = bench_workloads.machine(workdir)
    print(f"machine: nproc={info['nproc']} python={info['python']} sqlite={info['sqlite']}")
    rounds: dict[str, list[float]] = {"floor": [], "W1": [], "E1-async": [], "E1-callback": []}
    runs: list[dict[str, Any]] = []
    error = None
    latency: dict[str, Any] = {}
    try:
        for index in range(args.repeat):
            floor = bench_workloads.floor_single(workdir, {**size, "w1_steps": 10})
            rounds["floor"].append(floor.rate)
            w1 = bench_workloads.w1(workdir, w1_size, parallel=True)
            rounds["W1"].append(w1.rate)
            runs.append({"round": index, "what": "W1", "steps_per_s": w1.rate, **w1.extra})
            for style in WAITERS:
                burst = e1(workdir, size, style)
                rounds[f"E1-{style}"].append(burst["per_s"])
                runs.append({"round": index, "what": f"E1-{style}", **burst})
            print(
                f"round {index + 1}: floor {floor.rate:,.0f} commits/s, W1 {w1.rate:,.0f} steps/s,"
                f" E1-async {rounds['E1-async'][-1]:,.0f} events/s,"
                f" E1-callback {rounds['E1-callback'][-1]:,.0f} events/s"
            )
        latency = single(workdir, size)
        print(
            f"single event to a parked step, to its plan finished: p50 {latency['p50_ms']:.2f}"
            f" ms, p99 {latency['p99_ms']:.2f} ms"
        )
    except BenchFailure as exc:
        error = str(exc)
        print(f"FAILED: {error}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in rounds.items() if values}
    checks = []
    if "W1" in medians:
        for style in WAITERS:
            key = f"E1-{style}"
            if key in medians:
                ratio = medians[key] / medians["W1"]
                checks.append(
                    {
                        "claim": f"{key} events/s >= W1 steps/s (same run)",
                        "measured": round(ratio, 2),
                        "ok": ratio >= 1.0,
                    }
                )
    if latency:
        checks.append(
            {
                "claim": "single event p50 <= 1 ms (DESIGN.md, information)",
                "measured": round(latency["p50_ms"], 2),
                "ok": latency["p50_ms"] <= 1.0,
            }
        )
    for item in checks:
        print(f"{'PASS' if item['ok'] else 'not met'}: {item['claim']}: {item['measured']}")
    report = {
        "bench": "events",
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sizes": args.sizes,
        "size": size,
        "repeat": args.repeat,
        "machine": info,
        "medians": medians,
        "single": latency,
        "runs": runs,
        "checks": checks,
        "error": error,
        "ok": error is None,
    }
    out = args.json or Path(__file__).resolve().parent / "results" / (
        "events-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%MZ") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
