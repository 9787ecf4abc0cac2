"""An action that holds a worker until its test lets it go (for tests of waiting steps)."""

from __future__ import annotations

import threading

from pydynflow import Action

TIMEOUT = 30


class HoldsTheWorker(Action):
    """Holds the worker it runs on until the test sets ``release``; sets ``started`` once it
    runs. A test calls `reset` first (the events are shared by every test in the process)."""

    started = threading.Event()
    release = threading.Event()

    @classmethod
    def reset(cls) -> None:
        """Clear both events."""
        cls.started.clear()
        cls.release.clear()

    def run(self) -> None:
        HoldsTheWorker.started.set()
        assert HoldsTheWorker.release.wait(TIMEOUT)
