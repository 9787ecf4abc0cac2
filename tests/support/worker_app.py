"""The application module the worker-daemon tests pass as ``--app tests.support.worker_app``.

Importing it registers its actions and those of `tests.support.remote_actions` (`Quick`...).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import tests.support.remote_actions  # noqa: F401 - registers Quick, AwaitApproval...
from pydynflow import Action, Retry


class Retried(Action):
    """Succeed at once; retried if its process dies under it (any worker may be killed)."""

    rescue = Retry(2, backoff=0.1)

    def run(self) -> None:
        self.output["pid"] = os.getpid()


class Crashes(Action):
    """Block on its first run, once it wrote its process id to ``input["marker"]`` (the
    test then kills that process); succeed on the retry."""

    rescue = Retry(2, backoff=0.1)

    def run(self) -> None:
        marker = Path(self.input["marker"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            threading.Event().wait()  # until the test kills this process
        self.output["pid"] = os.getpid()


class ReadsFifo(Action):
    """Create the file ``input["marker"]``, then block until the test writes to the FIFO
    ``input["fifo"]``; keep what it wrote."""

    def run(self) -> None:
        Path(self.input["marker"]).touch()
        with open(self.input["fifo"], encoding="utf-8") as fifo:
            self.output["read"] = fifo.read()
