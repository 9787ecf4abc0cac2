"""Planning benchmark: a root action planning N children, in memory and stored.

Prints plans/s, actions/s and peak RSS. The baseline measured in the same run is the cost of
building the same number of plain Python objects (so the ratio says what planning adds).

    python bench/bench_planning.py [--children 1000] [--plans 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydynflow import Action, World  # noqa: E402
from pydynflow.planning import plan_action  # noqa: E402


class Child(Action):
    """A leaf with a run and a finalize step."""

    def run(self) -> None:
        self.output["done"] = True

    def finalize(self) -> None:
        pass


class Root(Action):
    """Plan ``count`` children, half of them referencing the previous one's output."""

    def plan(self, count: int) -> None:
        previous = None
        for index in range(count):
            data: dict[str, Any] = {"index": index, "payload": "x" * 64}
            if previous is not None and index % 2:
                data["after"] = previous.output["done"]
            previous = self.plan_action(Child, data)


def peak_rss_mb() -> float:
    """Return the peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, plans: int, children: int, plan_once: Any) -> dict[str, float]:
    """Time ``plans`` calls of ``plan_once`` and print the rates."""
    start = time.perf_counter()
    for _ in range(plans):
        plan_once()
    elapsed = time.perf_counter() - start
    actions = plans * (children + 1)
    row = {"seconds": elapsed, "plans_per_s": plans / elapsed, "actions_per_s": actions / elapsed}
    print(
        f"{label:<28} {elapsed:8.3f} s  {row['plans_per_s']:8.2f} plans/s  "
        f"{row['actions_per_s']:10.0f} actions/s  peak RSS {peak_rss_mb():7.1f} MiB"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--plans", type=int, default=20)
    args = parser.parse_args()
    n, plans = args.children, args.plans
    print(f"root planning {n} children, {plans} plans; python {sys.version.split()[0]}")

    def baseline() -> None:
        [
            {"index": i, "payload": "x" * 64, "steps": [object(), object(), object()]}
            for i in range(n)
        ]

    base = measure("baseline (plain objects)", plans, n, baseline)
    in_memory = measure("plan (in memory)", plans, n, lambda: plan_action(Root, (n,)))
    with tempfile.TemporaryDirectory() as tmp:
        world = World(f"sqlite:///{tmp}/bench.db", executor=False, create=True)
        stored = measure("plan + store (SQLite FULL)", plans, n, lambda: world.plan(Root, n))
        world.stop()
    print(
        f"ratios: in-memory planning = {base['seconds'] / in_memory['seconds']:.3f}x baseline "
        f"speed; storing costs {stored['seconds'] / in_memory['seconds']:.2f}x planning alone"
    )


if __name__ == "__main__":
    main()
