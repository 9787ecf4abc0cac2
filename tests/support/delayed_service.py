"""An executor world that may be the delayed executor, in a process of its own.

``python -m tests.support.delayed_service DB_URL POLL_INTERVAL``: imports
`tests.support.delayed_actions`, runs an executor world (heartbeat every 0.2 s, delayed
executor polling every POLL_INTERVAL seconds) until SIGTERM, and prints ``ready <world id>``
on stdout once it is started (after `World.run_forever` installed its signal handlers).
"""

from __future__ import annotations

import sys
import threading
import time

import tests.support.delayed_actions  # noqa: F401 - registers the actions
from pydynflow import World


def main(db: str, poll_interval: float) -> int:
    world = World(
        db, heartbeat=0.2, validity_timeout=2.0, delayed_poll_interval=poll_interval, pool_size=8
    )

    def announce() -> None:
        while not world.started:
            time.sleep(0.005)  # run_forever starts it on the main thread (noqa: sleep-ok)
        print(f"ready {world.id}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    return world.run_forever(stop_timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
