"""Worker slots: a step's code starts only on a free worker of its queue, and the times a
step stores are those of its code, not of its wait for a worker."""

from __future__ import annotations

import threading
import time

import pytest

from pydynflow import Action, PlanState, Result, StepState, World
from tests.support.gates import HoldsTheWorker

TIMEOUT = 30
WORK = 0.3


class Works03(Action):
    """A step whose work takes 0.3 s."""

    def run(self) -> None:
        time.sleep(WORK)  # the step's work (noqa: sleep-ok)
        self.output["done"] = True


def test_one_worker_runs_two_steps_one_after_the_other(sqlite_url: str) -> None:
    with World(sqlite_url, pool_size=1, auto_execute=False) as world:
        triggered = [world.trigger(Works03), world.trigger(Works03)]
        plans = [world.load(one.wait(TIMEOUT).id) for one in triggered]  # as stored
    spans = []
    for plan in plans:
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
        step = plan.steps[2]
        assert step.started_at is not None and step.ended_at is not None
        assert step.real_time == pytest.approx((step.ended_at - step.started_at).total_seconds())
        # its code's time, not the wait for the worker (the second waited about 0.3 s)
        assert WORK <= step.real_time < 0.5, step.real_time
        spans.append((step.started_at, step.ended_at))
    (_, first_ended), (second_started, _) = sorted(spans)
    assert first_ended <= second_started  # the [started_at, ended_at] spans do not overlap


class WantsTheWorker(Action):
    def run(self) -> None:
        self.output["ran"] = True


class Signals(Action):
    """Runs on its own queue: once it runs, its plan's start (and its sibling's request
    for a worker) is committed."""

    queue = "signals"
    running = threading.Event()

    def run(self) -> None:
        Signals.running.set()


class WaitsBesideASignal(Action):
    def plan(self) -> None:
        with self.concurrence():
            self.plan_action(WantsTheWorker)
            self.plan_action(Signals)


def _one_worker(sqlite_url: str) -> World:
    """A world with one worker for the default queue, the signals' queue beside it, and
    the gates of the actions above closed."""
    HoldsTheWorker.reset()
    Signals.running.clear()
    return World(sqlite_url, pool_size=1, queues={"signals": 1}, auto_execute=False)


def test_a_ready_step_waiting_for_a_worker_is_stored_pending(sqlite_url: str) -> None:
    with _one_worker(sqlite_url) as world:
        holding = world.trigger(HoldsTheWorker)
        try:
            assert HoldsTheWorker.started.wait(TIMEOUT)
            waiting = world.trigger(WaitsBesideASignal)
            assert Signals.running.wait(TIMEOUT)
            stored = world.load(waiting.id)
            assert stored.state == PlanState.RUNNING
            ready = stored.steps[3]  # WantsTheWorker's run step: ready, no worker free
            assert ready.action_class is WantsTheWorker
            assert (ready.state, ready.attempts, ready.started_at) == (StepState.PENDING, 0, None)
        finally:
            HoldsTheWorker.release.set()
        held = world.load(holding.wait(TIMEOUT).id)
        plan = world.load(waiting.wait(TIMEOUT).id)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    ran, holder = plan.steps[3], held.steps[2]
    assert (ran.state, ran.attempts) == (StepState.SUCCESS, 1)
    assert ran.started_at is not None and holder.ended_at is not None
    assert holder.ended_at <= ran.started_at  # it started once the worker was free


def test_attempts_is_one_after_a_first_successful_run(sqlite_url: str) -> None:
    with World(sqlite_url, auto_execute=False) as world:
        plan = world.load(world.trigger(WantsTheWorker).wait(TIMEOUT).id)
    assert (plan.steps[2].state, plan.steps[2].attempts) == (StepState.SUCCESS, 1)


# -- a plan's next step and the worker its step frees ------------------------------------

ORDER: list[str] = []


class Noted(Action):
    """Notes its name when its code runs."""

    def run(self, event: object = None) -> None:
        ORDER.append(self.input["name"])


class FirstHoldsTheWorker(Action):
    """Holds the only worker until the test lets it go, then two quick steps follow."""

    def plan(self) -> None:
        with self.sequence():
            self.plan_action(HoldsTheWorker)
            self.plan_action(Noted, {"name": "second"})
            self.plan_action(Noted, {"name": "third"})


class WaitsForTheWorker(Action):
    """A step of another plan that waits for the worker, beside a signal that says so."""

    def plan(self) -> None:
        with self.concurrence():
            self.plan_action(Noted, {"name": "other"})
            self.plan_action(Signals)


def _run_with_one_waiting(sqlite_url: str) -> list[str]:
    """The first plan's step holds the only worker while another plan's step waits for it;
    return the order in which the steps after it ran."""
    ORDER.clear()
    with _one_worker(sqlite_url) as world:
        first = world.trigger(FirstHoldsTheWorker)
        try:
            assert HoldsTheWorker.started.wait(TIMEOUT)
            other = world.trigger(WaitsForTheWorker)
            assert Signals.running.wait(TIMEOUT)  # its step's claim on the worker is queued
        finally:
            HoldsTheWorker.release.set()
        for triggered in (first, other):
            plan = triggered.wait(TIMEOUT)
            assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    return list(ORDER)


def test_a_plan_keeps_the_worker_for_its_next_steps_within_the_quantum(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydynflow.actors import slots

    monkeypatch.setattr(slots, "QUANTUM", 3600.0)
    # Its next step moves to running in the commit of the step before it, on the same worker.
    assert _run_with_one_waiting(sqlite_url) == ["second", "third", "other"]


def test_once_its_quantum_is_spent_the_worker_goes_to_the_step_that_waited(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydynflow.actors import slots

    monkeypatch.setattr(slots, "QUANTUM", 0.0)
    assert _run_with_one_waiting(sqlite_url) == ["other", "second", "third"]  # in turn
