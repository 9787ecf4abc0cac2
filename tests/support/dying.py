"""Actions that kill their worker process, for the process executor tests."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

from pydynflow import Action, Pause, Retry


def die(how: str) -> None:
    """Make this worker process die (or fail) in the way named by ``how``."""
    if how == "exception":
        raise RuntimeError("plain failure")
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    raise ValueError(f"unknown way to die: {how}")


class Dies(Action):
    """Dies on every attempt (``how``), or only the first time when ``once`` (a marker file)."""

    rescue = Retry(2, backoff=0.01, then=Pause)

    def run(self) -> None:
        once = self.input.get("once")
        if once is None or not Path(once).exists():
            if once is not None:
                Path(once).touch()
            die(self.input["how"])
        self.output["pid"] = os.getpid()


class DiesOnceRetry1(Dies):
    rescue = Retry(1, backoff=0.01, then=Pause)


class WorkerPid(Action):
    def run(self) -> None:
        self.output["pid"] = os.getpid()


class FiveSteps(Action):
    """Five steps in sequence; the ones listed in ``kill`` kill their worker once."""

    def plan(self, plan_no: int, kill: list[int], markers: str) -> None:
        with self.sequence():
            for index in range(5):
                if index in kill:
                    marker = str(Path(markers) / f"{plan_no}-{index}")
                    self.plan_action(DiesOnceRetry1, {"how": "sigkill", "once": marker})
                else:
                    self.plan_action(WorkerPid, {"index": index})
