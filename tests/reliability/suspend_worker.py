"""Child process of the suspended-recovery tests.

``python -m tests.reliability.suspend_worker MODE DB_PATH``

MODE ``park``: trigger one `Approval` plan (prints ``plan <id>``); its step suspends and its
callback prints ``parked <plan> <step> 1``. Then wait to be killed.

MODE ``event``: with ``PYDYNFLOW_TEST_BLOCK_RUN=1``, trigger one `Approval` plan (prints
``plan <id>``); its ``run(None)`` prints ``running <plan> <step>`` and blocks. Send the event
``{"approved": True}`` to the running step; once ``world.event`` returned (the event is
stored), print ``event-accepted``. Then wait to be killed.

MODE ``event-in-run`` (with ``PYDYNFLOW_TEST_BLOCK_EVENT=1``): trigger one `Approval` plan
(prints ``plan <id>``); once its step is parked, send it the event ``{"approved": True}``
and print ``event-accepted <result>``; its ``run(event)`` prints ``handling <plan> <step>``
and blocks. MODE ``async-event-in-run``: the same with an `AsyncApproval` plan (prints
``plan <id> <step>``), once its step is stored ``suspended``.

MODE ``async``: trigger one `AsyncApproval` plan with ``ledger`` ``requests.log`` next to the
database (prints ``plan <id> <step>``); once its step is stored ``suspended`` (awaiting
``wait_for_event``), print ``waiting``. Then wait to be killed.

Any way the process exits 1 after `TIMEOUT` seconds if nobody killed it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from pydynflow import World
from tests.reliability.suspend_actions import PARKED, RUNNING, Approval, AsyncApproval, emit

TIMEOUT = 120
EVENT = {"approved": True}


def main(argv: list[str]) -> int:
    mode, path = argv
    world = World(f"sqlite:///{path}").start()
    if mode in ("async", "async-event-in-run"):
        ledger = Path(path).parent / "requests.log"
        triggered = world.trigger(AsyncApproval, {"ledger": str(ledger)})
        step_id = world.load(triggered.id).actions[1].run_step_id
        assert step_id is not None
        emit(f"plan {triggered.id} {step_id}")
        deadline = time.monotonic() + TIMEOUT
        while world.storage.step_state(triggered.id, step_id) != "suspended":
            if time.monotonic() > deadline:
                return 1
            threading.Event().wait(0.01)  # the child may poll; the test only reads lines
        if mode == "async":
            emit("waiting")
        else:
            emit(f"event-accepted {world.event(triggered.id, step_id, EVENT)}")
        threading.Event().wait(TIMEOUT)  # the test kills us here
        return 1
    triggered = world.trigger(Approval)
    emit(f"plan {triggered.id}")
    if mode == "park":
        PARKED.get(timeout=TIMEOUT)
    elif mode == "event-in-run":
        _, step_id, _ = PARKED.get(timeout=TIMEOUT)
        emit(f"event-accepted {world.event(triggered.id, step_id, EVENT)}")
    elif mode == "event":
        if not RUNNING.wait(TIMEOUT):
            return 1
        step_id = world.load(triggered.id).actions[1].run_step_id
        assert step_id is not None
        accepted = world.event(triggered.id, step_id, EVENT)
        emit(f"event-accepted {accepted}")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    threading.Event().wait(TIMEOUT)  # the test kills us here
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
