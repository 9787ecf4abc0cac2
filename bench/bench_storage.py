"""Storage throughput: `Storage.save_plan` and `Storage.save_steps` against a raw sqlite3 floor.

Workload (fresh SQLite file, WAL, synchronous=FULL, durable commits):

1. ``save_plan`` of N plans (default 1,000) x 10 steps, each step's action with a 1 KB output:
   one transaction per plan, as the runtime saves a freshly planned plan.
2. ``save_steps`` of all N x 10 steps again (state changes) in batches of 64 and 512 steps,
   one transaction per batch, as the persistence actor's group commit does.

The floor, measured in the same run on another fresh file, inserts exactly the same rows (the
same SQL, the same already-encoded blobs) with ``executemany`` on a bare ``sqlite3``
connection: once with one commit for everything (the brief's floor), once with the same
commit pattern as the storage call (one per plan, one per batch). The ratio is floor rate /
storage rate: what encoding, peewee and Python cost on top of SQLite.

    python bench/bench_storage.py [--plans 1000] [--steps 10] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydynflow.flows import Atom, Concurrence, Sequence  # noqa: E402
from pydynflow.plan import ActionRecord, ExecutionPlan, HistoryEntry, Step  # noqa: E402
from pydynflow.states import Phase, PlanState, StepState  # noqa: E402
from pydynflow.storage import Storage  # noqa: E402

CLASS = "bench.bench_storage.Work"


def one_kb_output(n: int) -> dict[str, Any]:
    """Return a ~1 KB JSON output that looks like a command's log."""
    lines = [
        f"{n:06d} line {i:02d}: host-{i % 7}.example.com responded in {i * 13 % 97} ms"
        for i in range(14)
    ]
    return {"stdout": "\n".join(lines), "exit_status": 0, "n": n}


def make_plan(steps: int) -> ExecutionPlan:
    """Return a stopped plan with ``steps`` actions, one run step each, 1 KB outputs."""
    plan_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    actions = {
        i: ActionRecord(
            i,
            plan_id,
            CLASS,
            input={"index": i, "host": f"host-{i}"},
            output=one_kb_output(i),
            run_step_id=i,
        )
        for i in range(1, steps + 1)
    }
    plan_steps = {
        i: Step(
            i,
            plan_id,
            i,
            CLASS,
            Phase.RUN,
            StepState.SUCCESS,
            started_at=now,
            ended_at=now,
            real_time=0.001,
            execution_time=0.001,
            progress_done=1.0,
            action=actions[i],
        )
        for i in range(1, steps + 1)
    }
    return ExecutionPlan(
        id=plan_id,
        label=CLASS,
        state=PlanState.STOPPED,
        started_at=now,
        ended_at=now,
        steps=plan_steps,
        actions=actions,
        run_flow=Concurrence([Sequence([Atom(i) for i in range(1, steps + 1)])]),
        history=[
            HistoryEntry(now, "start execution", "w"),
            HistoryEntry(now, "finish execution", "w"),
        ],
    )


def rate(label: str, rows: int, seconds: float, unit: str = "rows") -> float:
    """Print and return ``rows / seconds``."""
    value = rows / seconds
    print(f"  {label:<52} {value:>12,.0f} {unit}/s  ({rows:,} in {seconds:.3f} s)")
    return value


def raw_floor(
    path: str,
    storage_sql: dict[str, str],
    plan_rows: list[Any],
    action_rows: list[Any],
    step_rows: list[Any],
    per_commit: list[tuple[int, int, int]],
) -> float:
    """Insert the given rows with bare sqlite3; ``per_commit`` = (plans, actions, steps) per txn."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA synchronous = FULL")
    start = time.perf_counter()
    p = a = s = 0
    for plans, actions, steps in per_commit:
        conn.execute("BEGIN IMMEDIATE")
        if plans:
            conn.executemany(storage_sql["plan"], plan_rows[p : p + plans])
        if actions:
            conn.executemany(storage_sql["action"], action_rows[a : a + actions])
        if steps:
            conn.executemany(storage_sql["step"], step_rows[s : s + steps])
        conn.execute("COMMIT")
        p, a, s = p + plans, a + actions, s + steps
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--dir", default=None, help="where the database files go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pydynflow-bench-", dir=args.dir))
    try:
        run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Run the benchmark with its files in ``workdir``."""
    plans = [make_plan(args.steps) for _ in range(args.plans)]
    n_steps = args.plans * args.steps
    rows_per_plan = 1 + 2 * args.steps  # plan row + actions + steps
    print(
        f"{args.plans} plans x {args.steps} steps, 1 KB outputs, SQLite WAL synchronous=FULL in {workdir}"
    )

    # -- storage -------------------------------------------------------------------------------
    storage = Storage(f"sqlite:///{workdir / 'storage.db'}")
    start = time.perf_counter()
    for plan in plans:
        storage.save_plan(plan)
    save_plan_s = time.perf_counter() - start
    all_steps = [step for plan in plans for step in plan.steps.values()]
    for step in all_steps:
        step.state = StepState.SUSPENDED
    batch_seconds: dict[int, float] = {}
    for batch in (64, 512):
        start = time.perf_counter()
        for i in range(0, len(all_steps), batch):
            storage.save_steps(all_steps[i : i + batch])
        batch_seconds[batch] = time.perf_counter() - start
    # The exact rows the storage wrote, pre-encoded, for the floor.
    sql = {
        "plan": storage._sql_plan_upsert,
        "action": storage._sql_action_upsert,
        "step": storage._sql_step_upsert,
    }
    plan_rows = [storage._plan_statement(plan)[1] for plan in plans]
    action_rows = [storage._action_row(a) for plan in plans for a in plan.actions.values()]
    step_rows = [storage._step_row(step) for step in all_steps]
    storage.close()

    # -- floor ---------------------------------------------------------------------------------
    def fresh_floor(name: str) -> str:
        Storage(f"sqlite:///{workdir / name}").close()  # the same schema, then bare sqlite3
        return str(workdir / name)

    one_commit = [(args.plans, len(action_rows), len(step_rows))]
    floor_one = raw_floor(
        fresh_floor("floor1.db"), sql, plan_rows, action_rows, step_rows, one_commit
    )
    per_plan = [(1, args.steps, args.steps)] * args.plans
    floor_path = fresh_floor("floor2.db")
    floor_per_plan = raw_floor(floor_path, sql, plan_rows, action_rows, step_rows, per_plan)
    # floor2.db now holds every step, as storage.db did for save_steps: updates from here on.
    floor_batches = {}
    for batch in (64, 512):
        commits = [(0, 0, min(batch, n_steps - i)) for i in range(0, n_steps, batch)]
        floor_batches[batch] = raw_floor(floor_path, sql, [], [], step_rows, commits)
    floor_steps_one = raw_floor(floor_path, sql, [], [], step_rows, [(0, 0, n_steps)])

    # -- report --------------------------------------------------------------------------------
    total_rows = args.plans * rows_per_plan
    print("save_plan (one transaction per plan):")
    storage_rate = rate("Storage.save_plan", total_rows, save_plan_s)
    rate("  = steps", n_steps, save_plan_s, "steps")
    rate("  = plans", args.plans, save_plan_s, "plans")
    one_rate = rate("raw sqlite3 floor, executemany, one commit", total_rows, floor_one)
    per_rate = rate("raw sqlite3, executemany, one commit per plan", total_rows, floor_per_plan)
    print(
        f"  ratio floor(one commit)/storage = {one_rate / storage_rate:.1f}x; "
        f"floor(commit per plan)/storage = {per_rate / storage_rate:.2f}x"
    )
    steps_one_rate = None
    for batch in (64, 512):
        print(f"save_steps, batches of {batch} (one transaction per batch):")
        s_rate = rate(f"Storage.save_steps({batch})", n_steps, batch_seconds[batch], "steps")
        f_rate = rate(
            f"raw sqlite3, executemany, batches of {batch}", n_steps, floor_batches[batch], "steps"
        )
        steps_one_rate = rate(
            "raw sqlite3 floor, executemany, one commit", n_steps, floor_steps_one, "steps"
        )
        print(
            f"  ratio floor(one commit)/storage = {steps_one_rate / s_rate:.1f}x; "
            f"floor(same batches)/storage = {f_rate / s_rate:.2f}x"
        )


if __name__ == "__main__":
    main()
