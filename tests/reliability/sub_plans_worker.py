"""Child process of the sub-plan kill test: ``python -m tests.reliability.sub_plans_worker
bulk DB``.

Starts an executor world on the database (it continues what a killed child left); the
first child triggers one `BulkParent` (``PYDYNFLOW_TEST_SUB_PLANS`` sub-plans, batches of
20, at most 5 at once) and prints ``progress`` once ``PYDYNFLOW_TEST_PROGRESS_AFTER`` of
them stopped; a later child waits for the parent and prints ``done STATE RESULT``.
"""

from __future__ import annotations

import os
import sys
import time

from pydynflow import World
from tests.reliability.restart_actions import emit
from tests.support.sub_plan_actions import BulkParent

TIMEOUT = 120


def main(argv: list[str]) -> int:
    _, path = argv
    world = World(f"sqlite:///{path}", pool_size=5).start()
    emit("started")
    parents = [plan for plan in world.plans(limit=None) if plan.caller is None]
    if not parents:
        count = int(os.environ.get("PYDYNFLOW_TEST_SUB_PLANS", "200"))
        parent_id = world.trigger(BulkParent, count, 20, 5).id
        after = int(os.environ.get("PYDYNFLOW_TEST_PROGRESS_AFTER", "60"))
        deadline = time.monotonic() + TIMEOUT
        while (
            world.storage.count_plans(caller_execution_plan_id=parent_id, state="stopped") < after
        ):
            if time.monotonic() > deadline:
                raise SystemExit("no progress")
            time.sleep(0.005)  # progress read from the database (noqa: sleep-ok)
        emit("progress")
    else:
        parent_id = parents[0].id
    continued = {triggered.id: triggered for triggered in world.auto_executed}
    if parent_id in continued:
        plan = continued[parent_id].wait(TIMEOUT)
    else:
        deadline = time.monotonic() + TIMEOUT
        while (plan := world.load(parent_id)).state not in ("stopped", "paused"):
            if time.monotonic() > deadline:
                raise SystemExit(f"the parent is still {plan.state}")
            time.sleep(0.01)  # progress read from the database (noqa: sleep-ok)
    emit(f"done {plan.state} {plan.result}")
    world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
