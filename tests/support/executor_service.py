"""An executor world in a process of its own, for client worlds of other processes.

``python -m tests.support.executor_service DB_URL``: imports `tests.support.remote_actions`
(and `tests.support.sub_plan_actions`, `tests.support.scenario_actions`),
runs an executor world (heartbeat every 0.2 s) until SIGTERM, and prints ``ready <world
id>`` on stdout once it is started: `World.run_forever` starts it after installing its
signal handlers, so a SIGTERM sent after that line always stops it gracefully.
"""

from __future__ import annotations

import sys
import threading
import time

import tests.support.remote_actions  # noqa: F401 - registers the actions
import tests.support.scenario_actions  # noqa: F401 - and those of the Dynflow scenarios
import tests.support.sub_plan_actions  # noqa: F401 - and those of the sub-plan tests
from pydynflow import World


def main(db: str) -> int:
    world = World(db, heartbeat=0.2, validity_timeout=2.0)

    def announce() -> None:
        while not world.started:
            time.sleep(0.005)  # run_forever starts it on the main thread (noqa: sleep-ok)
        print(f"ready {world.id}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    return world.run_forever(stop_timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
