"""Child process of the kill tests: ``python -m tests.reliability.w1_worker MODE DB_PATH``.

MODE ``w1``: plan 200 `Chain` plans (each committed; prints ``plan <id>``), print
``submitted``, then execute them all. Steps print ``progress`` when told to (see
`kill_actions`). If nobody kills the process it prints ``done`` once every plan ended.

MODE ``block``: trigger one `Block` plan with ``{"block": True}`` (prints ``plan <id>``, then
``writer <pid>``, its writer process); its
step prints ``blocking ...`` and blocks forever when ``PYDYNFLOW_TEST_BLOCK=1``.
"""

from __future__ import annotations

import sys

from pydynflow import World
from tests.reliability.kill_actions import Block, Chain, emit

PLANS = 200
TIMEOUT = 120


def main(argv: list[str]) -> int:
    mode, path = argv
    world = World(f"sqlite:///{path}").start()
    if mode == "w1":
        plans = [world.plan(Chain) for _ in range(PLANS)]
        for plan in plans:
            emit(f"plan {plan.id}")
        emit("submitted")
        running = [world.execute(plan.id) for plan in plans]
    elif mode == "block":
        triggered = world.trigger(Block, {"block": True})
        emit(f"plan {triggered.id}")
        writer = world._runtime.persistence.proxy().writer.get()  # type: ignore[union-attr]
        emit(f"writer {writer.pid}")
        running = [triggered]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    for triggered in running:
        triggered.wait(TIMEOUT)
    emit("done")
    world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
