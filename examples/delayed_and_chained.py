"""Nightly maintenance: a delayed backup, the jobs chained after it, and a cancelled one.

`World.delay` stores a plan ``scheduled``, to be planned and run when its ``start_at``
comes (and failed if it could not start before its ``start_before``). `World.chain` stores
a plan that runs once the plans it names have all stopped: here the log rotation waits for
the backup, and the report for both. A third delayed job (a disk scrub in an hour) is
cancelled before it is due. The world's delayed executor plans and runs each plan when it
is due; a chained plan starts at its first poll after its prerequisites stopped (every
``delayed_poll_interval`` seconds: one here, 15 by default).

The report's ``@on_plan("stopped")`` hook tells this script when the chain is done.

Run it: ``python examples/delayed_and_chained.py [DB_URL]`` (default: ``pydynflow.db``).
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta

from pydynflow import Action, ExecutionPlan, World, on_plan

finished = threading.Event()


class Backup(Action):
    """Back a database up (simulated)."""

    label = "backup"

    def plan(self, database: str) -> None:
        self.plan_self({"database": database})

    def run(self) -> None:
        self.output["file"] = f"/backups/{self.input['database']}.dump"


class RotateLogs(Action):
    """Rotate the logs once the backup is done."""

    label = "rotate logs"

    def run(self) -> None:
        self.output["rotated"] = ["app.log", "db.log"]


class Report(Action):
    """Report on the night's jobs."""

    label = "report"

    def plan(self, recipient: str) -> None:
        self.plan_self({"to": recipient})

    def run(self) -> None:
        self.output["sent_to"] = self.input["to"]

    @on_plan("stopped")
    def done(self, plan: ExecutionPlan) -> None:
        finished.set()


class ScrubDisks(Action):
    """A long disk scrub, planned for later."""

    label = "scrub disks"

    def run(self) -> None:
        self.output["scrubbed"] = True


def main(url: str) -> int:
    with World(url, delayed_poll_interval=1.0) as world:
        now = datetime.now(UTC)
        backup = world.delay(
            Backup,
            {"start_at": now + timedelta(seconds=2), "start_before": now + timedelta(minutes=5)},
            "inventory",
        )
        rotate = world.chain(backup.id, RotateLogs)
        report = world.chain([backup.id, rotate.id], Report, "ops@example.com")
        scrub = world.delay(ScrubDisks, {"start_at": now + timedelta(hours=1)})
        waiting, chained = (
            world.load(backup.id).delayed_plan(),
            world.load(report.id).delayed_plan(),
        )
        assert waiting is not None and chained is not None  # both wait to be planned
        print(f"backup {backup.id} is {backup.state}, due at {waiting.start_at:%H:%M:%S}")
        print(f"report waits for {len(chained.blocked_by)} plans")
        print(f"cancelling the disk scrub: {world.cancel(scrub.id)} plan")
        if not finished.wait(60):
            print("the chain did not finish within a minute", file=sys.stderr)
            return 1
        for plan_id in (backup.id, rotate.id, report.id, scrub.id):
            plan = world.load(plan_id)
            history = ", ".join(entry.name for entry in plan.history)
            print(f"{plan.label}: {plan.state}/{plan.result} ({history})")
        print(f"report sent to {world.load(report.id).steps[2].output['sent_to']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///pydynflow.db"))
