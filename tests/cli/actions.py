"""Actions for the command-line tests, run by an executor world in the test process.

Each plan's state is reached through the engine, never written by hand: `Succeeds` stops
with result success, `Fails` pauses with an error, `FailsOnce` pauses once and succeeds
when resumed, `Waits` and `WaitsCancellable` stay suspended until an event (or a Cancel).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydynflow import Action, Cancellable

SUSPENDED: dict[str, threading.Event] = {}
"""Set, per ``input["key"]``, once that `Waits` step is stored suspended."""


class Succeeds(Action):
    """Succeed at once."""

    label = "cli-test succeeds"

    def run(self) -> None:
        self.output["done"] = True


class Fails(Action):
    """Fail every time: the plan pauses with an error."""

    def run(self) -> None:
        raise RuntimeError("disk full")


class FailsOnce(Action):
    """Fail the first time (leaving a marker file), succeed when run again."""

    def run(self) -> None:
        marker = Path(self.input["marker"])
        if not marker.exists():
            marker.touch()
            raise RuntimeError("not yet")
        self.output["done"] = True


def _announce(key: str) -> Any:
    return lambda ref: SUSPENDED[key].set()


class Waits(Action):
    """Suspend until an event, then keep it as output."""

    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend(_announce(self.input["key"]))
        self.output["event"] = event


class WaitsCancellable(Cancellable, Waits):
    """Suspend until an event; a Cancel ends it at once."""

    def cancel(self) -> None:
        self.output["cancelled"] = True
