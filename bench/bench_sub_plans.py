"""Sub-plans at bulk size: a parent with 10,000 sub-plans (batches of 100, at most 20 running
at once) on SQLite, next to W1 measured in the same run.

``bulk`` triggers one `Bulk` parent (`WithSubPlans`) whose sub-plans are one step each
that sleeps ``--pace`` seconds (10 ms: long enough for the limit to be reached); it reports the wall time per sub-plan, checks the parent's counts, that every
sub-plan ended ``stopped``/``success`` and was created once, and the most sub-plans whose
run steps overlapped in time (from their stored start and end times; must be <= the limit).
``W1`` (see ``bench_workloads.py``: 200 plans x 10 sequential no-op steps from 16 threads)
gives the time per plan of the same machine in the same run. The bulk world has 32 workers,
so that the limit, not the pool, bounds how many sub-plans run at once. Fresh SQLite file (WAL,
``synchronous=FULL``) per run; ``--repeat`` alternating rounds, medians reported.

    .venv/bin/python bench/bench_sub_plans.py [--count 10000] [--pace 0.01] [--repeat 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_workloads as workloads  # noqa: E402

from pydynflow import Action, WithSubPlans, World  # noqa: E402
from pydynflow.storage import Storage  # noqa: E402

BATCH_SIZE = 100
LIMIT = 20
POOL_SIZE = 32  # more workers than the limit: the limit, not the pool, bounds the overlap


class Item(Action):
    """One sub-plan: a run step that sleeps ``pace`` seconds."""

    def plan(self, index: int, pace: float) -> None:
        self.plan_self({"index": index, "pace": pace})

    def run(self) -> None:
        time.sleep(self.input["pace"])
        self.output["index"] = self.input["index"]


class Bulk(WithSubPlans):
    """``count`` `Item` sub-plans, batches of 100, at most 20 at once."""

    batch_size = BATCH_SIZE
    concurrency_limit = LIMIT

    def plan(self, count: int, pace: float) -> None:
        self.plan_self({"count": count, "pace": pace})

    def total_count(self) -> int:
        return int(self.input["count"])

    def create_sub_plans(self) -> None:
        for index in self.current_batch():
            self.trigger_sub_plan(Item, index, self.input["pace"])


@dataclass
class BulkRun:
    """One measured bulk run."""

    wall_s: float
    count: int
    most_at_once: int

    @property
    def per_sub_plan_ms(self) -> float:
        return self.wall_s / self.count * 1000


def most_at_once(storage: Storage, parent_id: str) -> int:
    """Return the most sub-plans whose run steps ran at one moment (stored times)."""
    moments = []
    for child in storage.find_plans(caller_execution_plan_id=parent_id, limit=None):
        step = child.steps[child.actions[child.root_action_id].run_step_id]
        moments += [(step.started_at, 1), (step.ended_at, -1)]
    running = most = 0
    for _, change in sorted(moments):
        running += change
        most = max(most, running)
    return most


def bulk(workdir: Path, count: int, pace: float) -> BulkRun:
    """Run one parent with ``count`` sub-plans on a fresh file; check what it left."""
    url = f"sqlite:///{workloads.fresh_db(workdir, 'bulk')}"
    world = World(url, auto_execute=False, pool_size=POOL_SIZE)
    world.start()
    try:
        workloads.settle()
        start = time.perf_counter()
        plan = world.trigger(Bulk, count, pace).wait(workloads.WAIT_TIMEOUT * 10)
        wall = time.perf_counter() - start
        output = plan.actions[1].output
        if (plan.state, plan.result) != ("stopped", "success"):
            raise workloads.BenchFailure(f"bulk: the parent ended {plan.state}/{plan.result}")
        expected = {"total_count": count, "planned_count": count, "success_count": count}
        if any(output.get(key) != value for key, value in expected.items()):
            raise workloads.BenchFailure(f"bulk: wrong counts {output}")
        children = world.storage.find_plans(caller_execution_plan_id=plan.id, limit=None)
        if len(children) != count or any(c.result != "success" for c in children):
            raise workloads.BenchFailure(f"bulk: {len(children)} sub-plans, not all success")
        most = most_at_once(world.storage, plan.id)
        if most > LIMIT:
            raise workloads.BenchFailure(f"bulk: {most} sub-plans ran at once (limit {LIMIT})")
    finally:
        world.stop(timeout=workloads.WAIT_TIMEOUT)
    return BulkRun(wall, count, most)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="sub-plans of the parent")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds per sub-plan step")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of both (median)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--dir", type=Path, help="where the temporary databases go")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.count < 1:
        parser.error("--repeat and --count must be >= 1")
    size = workloads.SIZES["full"]
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-bench-", dir=args.dir))
    info = workloads.machine(workdir)
    print(
        f"machine: nproc={info['nproc']} python={info['python']} sqlite={info['sqlite']}; "
        f"{args.count} sub-plans of {args.pace * 1000:g} ms (batches of {BATCH_SIZE}, "
        f"limit {LIMIT}); "
        f"W1 {size['w1_plans']} plans x {size['w1_steps']} steps; {args.repeat} rounds"
    )
    bulk_runs: list[BulkRun] = []
    w1_runs: list[workloads.Run] = []
    failure: BaseException | None = None
    try:
        for round_ in range(1, args.repeat + 1):
            w1_run = workloads.w1(workdir, size, parallel=True)
            w1_runs.append(w1_run)
            per_plan = w1_run.wall_s / size["w1_plans"] * 1000
            print(
                f"  round {round_}: W1   {per_plan:7.2f} ms per plan ({w1_run.rate:,.0f} steps/s)"
            )
            run = bulk(workdir, args.count, args.pace)
            bulk_runs.append(run)
            print(
                f"  round {round_}: bulk {run.per_sub_plan_ms:7.2f} ms per sub-plan "
                f"({run.wall_s:.1f} s, at most {run.most_at_once} at once)"
            )
    except (workloads.BenchFailure, TimeoutError) as exc:
        failure = exc
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {}
    if bulk_runs and w1_runs:
        per_sub = statistics.median(run.per_sub_plan_ms for run in bulk_runs)
        per_plan = statistics.median(run.wall_s / size["w1_plans"] * 1000 for run in w1_runs)
        summary = {
            "ms_per_sub_plan": per_sub,
            "w1_ms_per_plan": per_plan,
            "sub_plan_over_w1_plan": per_sub / per_plan,
            "most_at_once": max(run.most_at_once for run in bulk_runs),
        }
        print()
        print(
            f"sub-plan {per_sub:.2f} ms (1 step of {args.pace * 1000:g} ms) vs W1 plan {per_plan:.2f} ms (10 steps): "
            f"{per_sub / per_plan:.2f}x; at most {summary['most_at_once']} at once "
            f"(limit {LIMIT})"
        )
    if args.json is not None:
        payload = {
            "machine": info,
            "count": args.count,
            "pace_s": args.pace,
            "batch_size": BATCH_SIZE,
            "concurrency_limit": LIMIT,
            "repeat": args.repeat,
            "ok": failure is None,
            "error": None if failure is None else str(failure),
            "summary": summary,
            "bulk": [asdict(run) for run in bulk_runs],
            "w1": [asdict(run) for run in w1_runs],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
