"""Child process of the worker-death test: ``python -m tests.reliability.process_world hang DB``.

Starts ``World(DB, executor="processes")`` and triggers one `Hang` plan (prints ``plan <id>``).
Its step, in a worker process, prints ``worker <pid> <parent pid>`` (the parent is the fork
server multiprocess started for the world) and then never returns.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from pydynflow import Action, World
from tests.reliability.kill_actions import emit


class Hang(Action):
    """One step that says which process runs it, then blocks forever."""

    def run(self, event: Any = None) -> None:
        emit(f"worker {os.getpid()} {os.getppid()}")
        threading.Event().wait()


def main(argv: list[str]) -> int:
    mode, path = argv
    if mode != "hang":
        raise SystemExit(f"unknown mode {mode!r}")
    # By its importable name: run with ``-m`` this module is ``__main__``, and the world
    # stores the class name that the worker processes import.
    from tests.reliability.process_world import Hang

    world = World(f"sqlite:///{path}", executor="processes", pool_size=2).start()
    triggered = world.trigger(Hang)
    emit(f"plan {triggered.id}")
    triggered.wait()  # never returns: the test kills this process
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
