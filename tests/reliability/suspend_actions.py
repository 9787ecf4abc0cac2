"""The action shared by the suspended-recovery tests and their child (`suspend_worker`).

Both processes import it as ``tests.reliability.suspend_actions`` so the stored class name
resolves in each. `Approval.run(None)` counts its runs in ``output["runs"]``, records the
process it ran in, then suspends; its suspend callback prints ``parked <plan> <step> <runs>``
and puts ``(plan id, step id, runs)`` on `PARKED`, where a test in this process waits for it.
An event finishes the step: ``output["event"]`` is the payload.

`AsyncApproval` is the same with an ``async def run``: it counts its starts in
``output["starts"]``, appends one line to the file ``input["ledger"]`` (the side effect that
must not happen twice) unless ``output["requested"]`` says it already did, and then awaits
``wait_for_event``: ``output["event"]`` is what it gets.

Only the child gets ``PYDYNFLOW_TEST_BLOCK_RUN=1``: ``run(None)`` then prints
``running <plan> <step>``, sets `RUNNING` and blocks forever before it suspends. With
``PYDYNFLOW_TEST_BLOCK_EVENT=1`` (the child only too), both actions print
``handling <plan> <step>`` once they have their event, and block forever before they finish.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

from pydynflow import Action
from pydynflow.action import SuspendedRef

BLOCK_RUN = "PYDYNFLOW_TEST_BLOCK_RUN"
BLOCK_EVENT = "PYDYNFLOW_TEST_BLOCK_EVENT"

PARKED: queue.Queue[tuple[str, int, int]] = queue.Queue()
RUNNING = threading.Event()

_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one line to stdout at once (the test synchronises on these lines)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def block_on_event(action: Action) -> None:
    """With `BLOCK_EVENT` set, say the action has its event, then block (to be killed)."""
    if os.environ.get(BLOCK_EVENT) == "1":
        emit(f"handling {action.execution_plan_id} {action.run_step_id}")
        threading.Event().wait()


class Approval(Action):
    """Suspend until an event arrives; count the runs that started from ``run(None)``."""

    def run(self, event: Any = None) -> None:
        if event is not None:
            block_on_event(self)
            self.output["event"] = event
            return
        runs = self.output["runs"] = self.output.get("runs", 0) + 1
        self.output.setdefault("pids", []).append(os.getpid())
        if os.environ.get(BLOCK_RUN) == "1":
            emit(f"running {self.execution_plan_id} {self.run_step_id}")
            RUNNING.set()
            threading.Event().wait()  # killed here, never suspends

        def parked(ref: SuspendedRef) -> None:
            emit(f"parked {ref.execution_plan_id} {ref.step_id} {runs}")
            PARKED.put((ref.execution_plan_id, ref.step_id, runs))

        self.suspend(parked)


class AsyncApproval(Action):
    """An async run that follows the rule: record before each await what must not repeat."""

    async def run(self, event: Any = None) -> None:
        self.output["starts"] = self.output.get("starts", 0) + 1
        if not self.output.get("requested"):
            with open(self.input["ledger"], "a", encoding="utf-8") as ledger:
                ledger.write(f"request from {os.getpid()}\n")
            self.output["requested"] = True
        event = await self.wait_for_event()
        block_on_event(self)
        self.output["event"] = event
