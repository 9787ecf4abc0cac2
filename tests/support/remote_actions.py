"""Actions an executor process runs and a client process triggers (`executor_service`)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pydynflow import Action, Cancellable, Retry


class Quick(Action):
    """One step that succeeds at once."""

    def run(self) -> None:
        self.output["done"] = True


class _Waits(Action):
    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend()
        self.output["approval"] = event


class AwaitApproval(Cancellable, _Waits):
    """One step that waits for its approval event; cancelling it ends it at once."""

    def cancel(self) -> None:
        self.output["cancelled"] = True


class FailsThenNext(Action):
    """A step that fails, then one that succeeds: a paused plan to skip and resume."""

    def plan(self) -> None:
        with self.sequence():
            self.plan_action(Broken)
            self.plan_action(Quick)


class Broken(Action):
    """A step that always fails."""

    def run(self) -> None:
        raise RuntimeError("broken on purpose")


class BlocksOnce(Action):
    """A step that, the first time, writes its process id to ``input["marker"]`` and blocks
    until its process is killed; run again (`Retry`), it succeeds."""

    rescue = Retry(2, backoff=0.05)

    def run(self) -> None:
        marker = Path(self.input["marker"])
        if not marker.exists():
            # Written whole, then renamed: the test reads it as soon as it exists.
            partial = marker.with_suffix(".partial")
            partial.write_text(str(os.getpid()))
            partial.rename(marker)
            threading.Event().wait()  # until the test kills this process
        self.output["pid"] = os.getpid()
