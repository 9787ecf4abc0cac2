"""`HookRunner`: hooks on a thread of their own, in submission order; what a stop does."""

from __future__ import annotations

import threading
from typing import Any

from pydynflow import Action, ExecutionPlan, on_plan
from pydynflow.actors.hook_runner import HookRunner
from pydynflow.hooks import HookCalls, take_hook_calls
from pydynflow.logging import get_logger
from pydynflow.planning import plan_action

TIMEOUT = 30
RAN: list[tuple[str, str]] = []  # (name, thread name)
GATES: dict[str, tuple[threading.Event, threading.Event]] = {}  # name -> (entered, release)


class Hooked(Action):
    """Its ``planned`` hook records its name; a gated one waits for the test first."""

    def plan(self, name: str, gated: bool = False, how: str = "") -> None:
        self.plan_self(name=name, gated=gated, how=how)

    @on_plan("planned")
    def record(self, plan: ExecutionPlan) -> None:
        name = self.input["name"]
        if self.input["gated"]:
            entered, release = GATES[name]
            entered.set()
            assert release.wait(TIMEOUT)
        if self.input["how"] == "exit":
            raise SystemExit(3)
        RAN.append((name, threading.current_thread().name))


def calls(name: str, gated: bool = False, how: str = "") -> HookCalls:
    """Plan `Hooked` (no storage) and take the hooks of its planning."""
    if gated:
        GATES[name] = (threading.Event(), threading.Event())
    taken = take_hook_calls(plan_action(Hooked, (name,), {"gated": gated, "how": how}))
    assert taken is not None and taken.kinds == ("pending", "planning", "planned")
    return taken


def ran() -> list[str]:
    return [name for name, _ in RAN]


def new_runner() -> HookRunner:
    RAN.clear()
    return HookRunner(get_logger(component="test"), name="test-hooks")


def test_hooks_run_on_one_thread_of_their_own_in_submission_order() -> None:
    runner = new_runner()
    for name in ("a", "b", "c"):
        runner.submit(calls(name))
    assert runner.stop(TIMEOUT) == 0
    assert RAN == [("a", "test-hooks"), ("b", "test-hooks"), ("c", "test-hooks")]
    assert runner.join(TIMEOUT)


def test_stop_waits_for_the_queued_hooks() -> None:
    runner = new_runner()
    runner.submit(calls("blocks", gated=True))
    runner.submit(calls("queued"))
    entered, release = GATES["blocks"]
    assert entered.wait(TIMEOUT)
    returned: list[int] = []
    stopper = threading.Thread(target=lambda: returned.append(runner.stop()))
    stopper.start()
    stopper.join(0.5)  # not a synchronisation: a stop that did not wait would be back by now
    assert stopper.is_alive() and ran() == []
    release.set()
    stopper.join(TIMEOUT)
    assert returned == [0] and ran() == ["blocks", "queued"]


def test_stop_drops_what_is_still_queued_when_its_timeout_runs_out() -> None:
    runner = new_runner()
    runner.submit(calls("blocks", gated=True))
    runner.submit(calls("dropped"))
    entered, release = GATES["blocks"]
    assert entered.wait(TIMEOUT)
    assert runner.stop(timeout=0) == 1
    release.set()
    assert runner.join(TIMEOUT)
    assert ran() == ["blocks"]
    runner.submit(calls("late"))  # after the stop: dropped at once
    assert ran() == ["blocks"]


def test_hurry_cuts_a_waiting_stop_short() -> None:
    runner = new_runner()
    runner.submit(calls("blocks", gated=True))
    runner.submit(calls("dropped"))
    entered, release = GATES["blocks"]
    assert entered.wait(TIMEOUT)
    returned: list[int] = []
    stopper = threading.Thread(target=lambda: returned.append(runner.stop()))
    stopper.start()
    runner.hurry()
    stopper.join(TIMEOUT)
    assert returned == [1]
    release.set()
    assert runner.join(TIMEOUT)
    assert ran() == ["blocks"]


def test_the_thread_outlives_what_a_hook_raises() -> None:
    runner = new_runner()
    runner.submit(calls("exits", how="exit"))
    runner.submit(calls("after"))
    assert runner.stop(TIMEOUT) == 0
    assert ran() == ["after"]


class StopsItsRunner(Action):
    runner: Any = None

    @on_plan("planned")
    def stop_runner(self, plan: ExecutionPlan) -> None:
        RAN.append(("stopper", str(StopsItsRunner.runner.stop())))


def test_a_hook_that_stops_its_runner_does_not_wait_for_itself() -> None:
    runner = StopsItsRunner.runner = new_runner()
    taken = take_hook_calls(plan_action(StopsItsRunner))
    assert taken is not None
    runner.submit(calls("blocks", gated=True))  # holds the thread until all is queued
    runner.submit(taken)
    runner.submit(calls("after"))
    GATES["blocks"][1].set()
    assert runner.join(TIMEOUT)  # the queued hook ran once the stopping one returned
    assert ran() == ["blocks", "stopper", "after"]
    assert RAN[1] == ("stopper", "0")
