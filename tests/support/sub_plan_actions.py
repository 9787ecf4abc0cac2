"""Actions of the sub-plan tests (SUB-*, BATCH-*, V2-*, CC-*): Dynflow's test fixtures.

`ChildAction` reads what to do from its input; `fail_in` lets a test make every child fail
in plan or run until it says otherwise (a module switch, as Dynflow's tests stub methods).
"""

from __future__ import annotations

import time
from typing import Any

from pydynflow import Action, Cancellable, Retry, WithSubPlans
from pydynflow.events import Abort, Cancel

fail_in: set[str] = set()
"""Phases ("plan", "run") in which every `ChildAction` fails, while the test wants it."""


class DummyAction(Action):
    """Does nothing (planned by the child, so that a sub-plan has a non-root action)."""

    def run(self) -> None:
        """Nothing to do."""


class ChildAction(Cancellable):
    """A sub-plan: plans `DummyAction`, then runs; suspends when asked until cancelled."""

    def plan(self, index: int = 0, suspend: bool = False) -> None:
        """Fail if the test says so; else plan `DummyAction` and self."""
        if "plan" in fail_in:
            raise RuntimeError("child failed in plan")
        self.plan_action(DummyAction)
        self.plan_self({"index": index, "suspend": suspend})

    def run(self, event: Any = None) -> None:
        """Suspend until `Cancel`/`Abort` if ``suspend``; `Abort` sets ``aborted``."""
        if "run" in fail_in:
            raise RuntimeError("child failed in run")
        if isinstance(event, Abort):
            self.output["aborted"] = True
            return
        if isinstance(event, Cancel):
            self.output["cancelled"] = True
            return
        self.output["ran"] = True
        if self.input["suspend"]:
            self.suspend()


class ParentAction(WithSubPlans):
    """Triggers ``count`` `ChildAction` sub-plans; counts its batches in its output."""

    batch_size = 5

    def plan(self, count: int, suspend: bool = False) -> None:
        """Plan the run step (and a `DummyAction`, as Dynflow's fixture does)."""
        self.plan_self({"count": count, "suspend": suspend})
        self.plan_action(DummyAction)

    def total_count(self) -> int:
        """As many as the input says."""
        return int(self.input["count"])

    def create_sub_plans(self) -> None:
        """One `ChildAction` per item of the batch."""
        self.output["batch_count"] = self.output.get("batch_count", 0) + 1
        for index in self.current_batch():
            self.trigger_sub_plan(ChildAction, index, self.input["suspend"])


class LimitedParent(ParentAction):
    """`ParentAction` with at most 4 sub-plans running at once."""

    concurrency_limit = 4


class ClosedParent(ParentAction):
    """`ParentAction` that may start no sub-plan at all (Dynflow's level 0)."""

    concurrency_limit = 0


class SlowChild(Action):
    """A sub-plan whose run takes a while (so that several overlap if allowed)."""

    rescue = Retry(3, backoff=0.01)

    def plan(self, index: int, pace: float = 0.005) -> None:
        """Plan the run step."""
        self.plan_self({"index": index, "pace": pace})

    def run(self) -> None:
        """Sleep ``pace`` seconds (a stand-in for real work)."""
        time.sleep(self.input["pace"])  # stands in for real work (noqa: sleep-ok)
        self.output["index"] = self.input["index"]


class BulkParent(WithSubPlans):
    """``count`` `SlowChild` sub-plans in batches of ``batch`` with a limit of ``limit``.

    Its run step counts from the database each time, so running it again after a crash
    is safe: `Retry` makes a restarted world go on with it.
    """

    rescue = Retry(3, backoff=0.01)

    def plan(self, count: int, batch: int = 100, limit: int | None = None) -> None:
        """Keep the sizes in the input."""
        self.plan_self({"count": count, "batch": batch, "limit": limit})

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        """From the input."""
        return int(self.input["batch"])

    @property
    def concurrency_limit(self) -> int | None:  # type: ignore[override]
        """From the input."""
        limit = self.input["limit"]
        return None if limit is None else int(limit)

    def total_count(self) -> int:
        """As many as the input says."""
        return int(self.input["count"])

    def create_sub_plans(self) -> None:
        """One `SlowChild` per item of the batch."""
        for index in self.current_batch():
            self.trigger_sub_plan(SlowChild, index)
