"""Child process of the restart tests: ``python -m tests.reliability.restart_worker MODE DB``.

Each mode starts an executor world on the database (which recovers and continues what an
earlier child left), prints ``started`` and ``continued <n>``, and then:

* ``five``: plans ``PYDYNFLOW_TEST_PLANS`` `Five` plans (all stored first, then executed)
  unless the database has plans already, waits for everything, prints ``done``.
* ``poison``: triggers one `Poison` plan unless there is one, waits, prints ``done``.
* ``finalize``: triggers one `RunThenFinalize` plan unless there is one, waits, ``done``.
"""

from __future__ import annotations

import os
import sys

from pydynflow import World
from tests.reliability.restart_actions import Five, Poison, RunThenFinalize, emit

TIMEOUT = 120


def main(argv: list[str]) -> int:
    mode, path = argv
    world = World(f"sqlite:///{path}", pool_size=5).start()
    emit("started")
    continued = list(world.auto_executed)
    emit(f"continued {len(continued)}")
    fresh = []
    if not world.plans(limit=1):
        if mode == "five":
            count = int(os.environ.get("PYDYNFLOW_TEST_PLANS", "40"))
            planned = [world.plan(Five) for _ in range(count)]
            fresh = [world.execute(plan.id) for plan in planned]
        elif mode == "poison":
            fresh = [world.trigger(Poison)]
        elif mode == "finalize":
            fresh = [world.trigger(RunThenFinalize)]
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        emit("triggered")
    for triggered in [*continued, *fresh]:
        plan = triggered.wait(TIMEOUT)
        emit(f"ended {plan.id} {plan.state} {plan.result}")
    emit("done")
    world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
