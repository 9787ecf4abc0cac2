"""A virtual clock that tells waiting tests when a timer is armed."""

from __future__ import annotations

import threading
from typing import Any

from pydynflow.testing import ManagedClock


class SignallingClock(ManagedClock):
    """A ManagedClock that notifies a condition whenever a timer is armed."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def schedule(self, delay: float, callback: Any) -> Any:
        timer = super().schedule(delay, callback)
        with self.changed:
            self.changed.notify_all()
        return timer

    def notify(self, *_: Any) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_for_timers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` timers are pending."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.pending()) >= count, timeout=timeout):
                raise TimeoutError(f"{count} timers were not armed within {timeout} s")

    def advance_until_done(self, triggered: Any, timeout: float = 30.0) -> None:
        """Fire timers as they get armed (virtual time) until ``triggered``'s plan ends."""
        triggered.future.add_done_callback(self.notify)
        while True:
            with self.changed:
                if not self.changed.wait_for(
                    lambda: triggered.done() or self.pending(), timeout=timeout
                ):
                    raise TimeoutError(f"no timer and no end of {triggered.id} in {timeout} s")
            if triggered.done():
                return
            self.advance_to_next()
