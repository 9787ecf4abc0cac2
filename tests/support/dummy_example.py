"""EX-2 (DummyExample) and the evented actions of EX-1, for the suspend/event scenarios."""

from __future__ import annotations

import re
import threading
from typing import Any

from pydynflow import Action
from pydynflow.events import Cancel
from pydynflow.mixins import Cancellable, Polling


class Rendezvous:
    """Block a step until the test releases it (Dynflow's pause hook)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def reset(self) -> None:
        self.reached.clear()
        self.release.clear()

    def pause(self) -> None:
        self.reached.set()
        self.release.wait(30)


POLL_PAUSE = Rendezvous()


class DeprecatedEventedAction(Action):
    """Suspend; with ``timeout`` the clock sends "timeout" after that many seconds."""

    def run(self, event: Any = None) -> None:
        if event is None:
            timeout = self.input.get("timeout")
            if timeout is not None:
                self.plan_event("timeout", timeout)
            self.suspend()
        elif event == "timeout":
            self.output["event"] = "timeout"
            raise RuntimeError("action timeouted")
        else:
            self.output["event"] = event


class PlanEventsAction(Action):
    """Plan a "ping" to itself, suspend, and finish when it arrives."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.plan_event("ping", self.input.get("ping_time", 0.5))
            self.suspend()
        elif event == "ping":
            self.output["result"] = "pinged"


class PollingExample(Polling):
    """EX-2 Polling: progress +10 per poll until 100."""

    poll_intervals = (0.001,)

    def invoke_external_task(self) -> Any:
        if self.input.get("text") == "troll setup":
            raise RuntimeError("Trolling detected")
        return {"progress": 0, "done": False}

    def poll_external_task(self) -> Any:
        text = self.input.get("text", "")
        progress = self.external_task["progress"]
        if text == "troll progress" and not self.output.get("trolled"):
            self.output["trolled"] = True
            raise RuntimeError("Trolling detected")
        match = re.search(r"pause in progress (\d+)", text)
        if match and progress == int(match.group(1)):
            POLL_PAUSE.pause()
        return {"progress": progress + 10, "done": progress + 10 >= 100}

    def run_progress(self) -> float:
        task = self.external_task or {"progress": 0}
        return float(task["progress"]) / 100


class CancelableSuspended(Cancellable, Polling):
    """EX-1 CancelableSuspended: a polling action that can be cancelled."""

    poll_intervals = (0.01,)

    def invoke_external_task(self) -> Any:
        return {"progress": 0}

    def poll_external_task(self) -> Any:
        task = dict(self.external_task)
        text = self.input.get("text", "")
        if task["progress"] == 30:
            if "cancel-external" in text:
                return task
            if "cancel-self" in text:
                self.world.event(self.execution_plan_id, self.run_step_id, Cancel())
                return task
        task["progress"] += 10
        return task

    def done(self) -> bool:
        return bool(self.external_task["progress"] >= 100)

    def cancel(self) -> None:
        if "cancel-fail" in self.input.get("text", ""):
            raise RuntimeError("action cancelled")
        self.external_task = {**self.external_task, "cancelled": True}

    def run_progress(self) -> float:
        return float(self.external_task["progress"]) / 100
