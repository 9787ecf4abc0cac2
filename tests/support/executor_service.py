"""An executor world in a process of its own, for client worlds of other processes.

``python -m tests.support.executor_service DB_URL``: imports `tests.support.remote_actions`,
starts an executor world (heartbeat every 0.2 s) and prints ``ready <world id>`` on stdout
once it is started; runs until SIGTERM.
"""

from __future__ import annotations

import sys

import tests.support.remote_actions  # noqa: F401 - registers the actions
from pydynflow import World


def main(db: str) -> int:
    world = World(db, heartbeat=0.2, validity_timeout=2.0).start()
    print(f"ready {world.id}", flush=True)
    return world.run_forever(stop_timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
