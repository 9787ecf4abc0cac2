"""A daemon as the running-as-a-service guide shows it: ``sys.exit(world.run_forever())``.

``python -m tests.support.service DB_URL``: plans one `Work` plan on ``DB_URL``, then runs
an executor world until a signal (starting, the world executes the plan). Markers on
stdout, one a line, for the test to synchronise on: ``plan <id>`` once the plan is stored,
``step started`` when the step's code starts. The step then works for about a second.
"""

from __future__ import annotations

import sys
import time

from pydynflow import Action, World

WORK_SECONDS = 1.0


class Work(Action):
    """A step whose code runs for about a second (a stand-in for real work)."""

    def run(self) -> None:
        print("step started", flush=True)
        deadline = time.monotonic() + WORK_SECONDS
        while time.monotonic() < deadline:  # busy for the whole second, signals or not
            time.sleep(0.01)  # the step's work (noqa: sleep-ok)
        self.output["worked"] = WORK_SECONDS


def main(db: str) -> int:
    world = World(db)
    plan = world.plan(Work)  # stored planned: the world executes it once started
    print(f"plan {plan.id}", flush=True)
    return world.run_forever(stop_timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
