"""Bulk work as sub-plans: one parent plan patches 500 hosts, at most 20 at a time.

`PatchHosts` is a `WithSubPlans` parent: its ``create_sub_plans`` triggers one `PatchHost`
sub-plan for each host of the current batch (100 per batch), and ``concurrency_limit = 20``
keeps at most 20 of them running at once. The parent's run step waits without holding a
thread; it is woken each time a sub-plan ends and keeps its counts (``success_count``,
``failed_count``, ``pending_count``...) in its output, counted in the database, so they
are right after a restart too. This script follows them with a progress bar (rich) read
from the stored plan, as any other process could.

Run it: ``python examples/bulk_sub_plans.py [DB_URL] [HOSTS]`` (default: ``pydynflow.db``
here, 500 hosts).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pydynflow import Action, WithSubPlans, World


class PatchHost(Action):
    """Patch one host (a few milliseconds of pretend work)."""

    def plan(self, host: str) -> None:
        self.plan_self({"host": host})

    def run(self) -> None:
        time.sleep(0.005)
        self.output["patched"] = self.input["host"]


class PatchHosts(WithSubPlans):
    """Patch every host as its own sub-plan, 100 per batch, 20 at once."""

    label = "patch hosts"
    batch_size = 100
    concurrency_limit = 20

    def plan(self, count: int) -> None:
        self.plan_self({"count": count})

    def total_count(self) -> int:
        return int(self.input["count"])

    def batch(self, start: int, size: int) -> list[str]:
        return [
            f"host-{index:04d}" for index in range(start, min(start + size, self.total_count()))
        ]

    def create_sub_plans(self) -> None:
        for host in self.current_batch():
            self.trigger_sub_plan(PatchHost, host)


def show(progress: Progress, task: TaskID, output: dict[str, int]) -> None:
    """Move the bar to the parent's stored counts."""
    success, failed = output.get("success_count", 0), output.get("failed_count", 0)
    pending = output.get("pending_count", output.get("total_count", 0))
    progress.update(
        task, completed=success + failed, counts=f"ok {success}, failed {failed}, pending {pending}"
    )


def main(argv: list[str]) -> int:
    db = argv[1] if len(argv) > 1 else "sqlite:///pydynflow.db"
    hosts = int(argv[2]) if len(argv) > 2 else 500
    console = Console()
    with World(db, pool_size=24) as world:
        triggered = world.trigger(PatchHosts, hosts)
        columns = (
            TextColumn("patching"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("hosts", total=hosts, counts="")
            while True:
                try:
                    plan = triggered.wait(0.2)
                    break
                except TimeoutError:  # not yet: show the counts the parent stored
                    show(progress, task, world.load(triggered.id).actions[1].output)
            show(progress, task, plan.actions[1].output)
        output = plan.actions[1].output
        console.print(
            f"plan {plan.id}: {plan.state}/{plan.result}; {output['success_count']} hosts "
            f"patched in {len(plan.sub_plans())} sub-plans"
        )
        return 0 if plan.result == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
