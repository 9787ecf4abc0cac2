"""Action classes shared by the kill tests and their child process (`w1_worker`).

Both processes import this module as ``tests.reliability.kill_actions`` so the stored class
names resolve in each. What a step does beyond its output depends only on environment
variables that the test sets for the child, never for itself:

* ``PYDYNFLOW_TEST_PROGRESS_AFTER=N``: the N-th `Step` run (counted over the whole process)
  prints ``progress`` to stdout; every later run sleeps ``PYDYNFLOW_TEST_PACE`` seconds
  (default 0.005), so plenty of W1 is still to do when the test kills the child.
* ``PYDYNFLOW_TEST_BLOCK=1``: a `Block` step with input ``{"block": True}`` prints
  ``blocking <plan id> <step id>`` and then never returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from pydynflow import Action

STEPS_PER_CHAIN = 10

_lock = threading.Lock()
_runs = 0


def emit(line: str) -> None:
    """Write one line to stdout at once (the test synchronises on these lines)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Step(Action):
    """A no-op step: records its index as its output."""

    def run(self, event: Any = None) -> None:
        global _runs
        self.output["done"] = self.input["i"]
        after = os.environ.get("PYDYNFLOW_TEST_PROGRESS_AFTER")
        if after is None:
            return
        with _lock:
            _runs += 1
            runs = _runs
        if runs == int(after):
            emit("progress")
        if runs >= int(after):
            pace = float(os.environ.get("PYDYNFLOW_TEST_PACE", "0.005"))
            time.sleep(pace)  # the child's workload pace (noqa: sleep-ok)


class Chain(Action):
    """W1's plan: ten sequential no-op steps."""

    def plan(self, *args: Any, **kwargs: Any) -> None:
        with self.sequence():
            for i in range(STEPS_PER_CHAIN):
                self.plan_action(Step, {"i": i})


class Block(Action):
    """One step that blocks forever in the child when its input says so."""

    def run(self, event: Any = None) -> None:
        if self.input.get("block") and os.environ.get("PYDYNFLOW_TEST_BLOCK") == "1":
            emit(f"blocking {self.execution_plan_id} {self.id}")
            threading.Event().wait()
        self.output["ran"] = True
