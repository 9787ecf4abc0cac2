"""Action classes of the restart tests and their child process (`restart_worker`).

Both processes import this module as ``tests.reliability.restart_actions``. What a step does
beyond its output depends on environment variables the test sets for the child only:

* ``PYDYNFLOW_TEST_LEDGER=path``: every `Paced` run appends ``<plan> <step> <pid> start``
  before its work and ``... end`` after it (an effects ledger: a step that ran twice at once
  would show two overlapping spans).
* ``PYDYNFLOW_TEST_PROGRESS_AFTER=N``: the N-th `Paced` run of the process prints
  ``progress``; every run sleeps ``PYDYNFLOW_TEST_PACE`` seconds (its workload).
* ``PYDYNFLOW_TEST_BLOCK_FINALIZE=1``: `RunThenFinalize`'s finalize prints ``finalizing``
  and never returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from pydynflow import Action, Retry

STEPS = 5
_lock = threading.Lock()
_runs = 0


def emit(line: str) -> None:
    """Write one line to stdout at once (the test synchronises on these lines)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _ledger(line: str) -> None:
    path = os.environ.get("PYDYNFLOW_TEST_LEDGER")
    if path:
        with _lock, open(path, "a") as ledger:
            ledger.write(line + "\n")


class Paced(Action):
    """A step of some work; an abnormal termination is retried."""

    rescue = Retry(3, backoff=0.01)

    def run(self) -> None:
        global _runs
        where = f"{self.execution_plan_id} {self.run_step_id} {os.getpid()}"
        _ledger(f"{where} start {time.time()}")
        with _lock:
            _runs += 1
            runs = _runs
        if runs == int(os.environ.get("PYDYNFLOW_TEST_PROGRESS_AFTER", "0")):
            emit("progress")
        time.sleep(float(os.environ.get("PYDYNFLOW_TEST_PACE", "0")))  # the work (noqa: sleep-ok)
        self.output["done"] = self.input["i"]
        _ledger(f"{where} end {time.time()}")


class Five(Action):
    """Five `Paced` steps in sequence."""

    def plan(self, *args: Any, **kwargs: Any) -> None:
        with self.sequence():
            for i in range(STEPS):
                self.plan_action(Paced, {"i": i})


class Poison(Action):
    """A step that kills its own process, every time it runs."""

    rescue = Retry(5, backoff=0.01)  # retries never help: the world dies under them

    def run(self) -> None:
        emit("poison")
        os.kill(os.getpid(), 9)


class RunThenFinalize(Action):
    """A run step that counts its runs in a ledger, then a finalize phase."""

    def run(self) -> None:
        _ledger(f"run {self.execution_plan_id}")
        self.output["ran"] = True

    def finalize(self) -> None:
        if os.environ.get("PYDYNFLOW_TEST_BLOCK_FINALIZE") == "1":
            emit("finalizing")
            threading.Event().wait()  # blocks until the test kills the process
        _ledger(f"finalize {self.execution_plan_id}")
