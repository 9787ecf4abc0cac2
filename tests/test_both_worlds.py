"""One set of rescue, retry and skip scenarios, held against both worlds.

`World` (actors, a writer process, a SQLite file) and `pydynflow.testing.InThreadWorld`
(the calling thread, virtual time) drive one execution core, so each scenario must end the
same way in both: the plan's state and result, each step's state, ``attempts``, ``retries``
and error, the actions' outputs and the history. The expectations are written once, from
API.md's "Rescue policies"; each test runs once per world.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from pydynflow import Action, ExecutionPlan, Fail, Pause, RescuePolicy, Retry, Skip, World
from pydynflow.events import Skip as SkipEvent
from pydynflow.states import Phase
from pydynflow.testing import InThreadWorld
from pydynflow.triggered import Triggered
from tests.support.clocks import SignallingClock

TIMEOUT = 30


# -- the two worlds behind one adapter -----------------------------------------------------


class Driver(Protocol):
    """What a scenario does with a world; each call returns once the plan has ended."""

    def run(self, action_class: type[Action], *args: Any) -> ExecutionPlan: ...
    def resume(self, plan_id: str) -> ExecutionPlan: ...
    def skip(self, plan_id: str, step_id: int) -> None: ...
    def load(self, plan_id: str) -> ExecutionPlan: ...
    def now(self) -> float: ...
    def close(self) -> None: ...


class EngineDriver:
    """A started `World` on a SQLite file, its backoffs on a `SignallingClock`."""

    def __init__(self, url: str, auto_rescue: bool) -> None:
        self.clock = SignallingClock()
        self.world = World(url, clock=self.clock, auto_rescue=auto_rescue, auto_execute=False)
        self.world.start()

    def run(self, action_class: type[Action], *args: Any) -> ExecutionPlan:
        return self._until_done(self.world.trigger(action_class, *args))

    def resume(self, plan_id: str) -> ExecutionPlan:
        return self._until_done(self.world.resume(plan_id))

    def skip(self, plan_id: str, step_id: int) -> None:
        self.world.skip(plan_id, step_id)

    def load(self, plan_id: str) -> ExecutionPlan:
        return self.world.load(plan_id)

    def now(self) -> float:
        return self.clock.now()

    def close(self) -> None:
        self.world.stop(TIMEOUT)

    def _until_done(self, triggered: Triggered) -> ExecutionPlan:
        """Fire backoff timers as they get armed (virtual time), until the plan ends."""
        self.clock.advance_until_done(triggered, TIMEOUT)
        returned = triggered.wait(TIMEOUT)
        stored = self.load(triggered.id)
        assert (returned.state, returned.result) == (stored.state, stored.result)
        return stored


class InThreadDriver:
    """An `InThreadWorld`: every call has run the plan to its end when it returns."""

    def __init__(self, auto_rescue: bool) -> None:
        self.world = InThreadWorld(auto_rescue=auto_rescue)

    def run(self, action_class: type[Action], *args: Any) -> ExecutionPlan:
        return self._stored(self.world.trigger(action_class, *args))

    def resume(self, plan_id: str) -> ExecutionPlan:
        return self._stored(self.world.resume(plan_id))

    def skip(self, plan_id: str, step_id: int) -> None:
        self.world.skip(plan_id, step_id)

    def load(self, plan_id: str) -> ExecutionPlan:
        return self.world.load(plan_id)

    def now(self) -> float:
        return self.world.clock.now()

    def close(self) -> None:
        self.world.stop()

    def _stored(self, triggered: Triggered) -> ExecutionPlan:
        returned = triggered.wait()
        stored = self.load(triggered.id)
        assert (returned.state, returned.result) == (stored.state, stored.result)
        return stored


@pytest.fixture(params=["World", "InThreadWorld"])
def open_world(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Callable[..., Driver]]:
    """Yield an opener of drivers over one kind of world; they are closed afterwards."""
    opened: list[Driver] = []

    def open_(*, auto_rescue: bool = True) -> Driver:
        driver: Driver
        if request.param == "World":
            driver = EngineDriver(sqlite_url, auto_rescue)
        else:
            driver = InThreadDriver(auto_rescue)
        opened.append(driver)
        return driver

    yield open_
    for driver in opened:
        driver.close()


@pytest.fixture
def world(open_world: Callable[..., Driver]) -> Driver:
    """A world of each kind with auto-rescue on (the default)."""
    return open_world()


# -- what a scenario's end looks like ------------------------------------------------------


def _key(plan: ExecutionPlan, step_id: int) -> str:
    step = plan.steps[step_id]
    return f"{step.input.get('name', step.action_class.__name__)}/{step.phase}"


def step_id(plan: ExecutionPlan, name: str, phase: str = "run") -> int:
    """Return the id of the step of the action named ``name`` in ``phase``."""
    (found,) = [sid for sid in plan.steps if _key(plan, sid) == f"{name}/{phase}"]
    return found


def outcome(plan: ExecutionPlan) -> dict[str, Any]:
    """Return what both worlds must agree on, keyed by the actions' ``name`` inputs.

    Steps as ``(state, attempts, retries, error class, error message)``; plan steps are
    left out once checked to have succeeded.
    """
    steps: dict[str, tuple[Any, ...]] = {}
    for sid, step in sorted(plan.steps.items()):
        if step.phase == Phase.PLAN:
            assert step.state == "success", (sid, step.state)
            continue
        error = (step.error.exception_class, step.error.message) if step.error else (None, None)
        steps[_key(plan, sid)] = (str(step.state), step.attempts, step.retries, *error)
    outputs = {
        record.input.get("name", record.action_class.__name__): record.output
        for record in plan.actions.values()
        if record.output
    }
    return {
        "plan": (str(plan.state), str(plan.result)),
        "steps": steps,
        "outputs": outputs,
        "history": [entry.name for entry in plan.history],
    }


def _bump(counter: Counter[str], plan_id: str) -> int:
    counter[plan_id] += 1
    return counter[plan_id]


# -- actions -------------------------------------------------------------------------------


class Breaks(Action):
    """Fails every run; its class keeps the default policy, Pause."""

    def run(self) -> None:
        raise RuntimeError(f"{self.input['name']} broke")


class Works(Action):
    def run(self) -> None:
        self.output["done"] = self.input["name"]


class Finalizes(Action):
    """Runs, then counts its finalize calls per plan."""

    calls: Counter[str] = Counter()

    def run(self) -> None:
        self.output["value"] = self.input["name"]

    def finalize(self) -> None:
        _bump(Finalizes.calls, self.execution_plan_id)


class SkippableBreaks(Action):
    """Fails its run; its rescue is Skip. Its finalize must never be called."""

    rescue = Skip
    finalized: Counter[str] = Counter()

    def run(self) -> None:
        raise RuntimeError(f"{self.input['name']} broke")

    def finalize(self) -> None:
        _bump(SkippableBreaks.finalized, self.execution_plan_id)


class UsesOutput(Action):
    """Runs with an output reference in its input; counts its finalize calls per plan."""

    finalized: Counter[str] = Counter()

    def run(self) -> None:
        self.output["got"] = self.input["value"]

    def finalize(self) -> None:
        _bump(UsesOutput.finalized, self.execution_plan_id)


class FailsThePlan(Action):
    rescue = Fail

    def run(self) -> None:
        raise RuntimeError("fatal broke")


class Flaky(Action):
    """Fails its first ``failures`` runs (counted per plan), Retry(2) with 10 s, 20 s."""

    rescue = Retry(2, backoff=10, factor=2, then=Pause)
    runs: Counter[str] = Counter()

    def run(self) -> None:
        runs = _bump(Flaky.runs, self.execution_plan_id)
        if runs <= self.input["failures"]:
            raise RuntimeError(f"flaky failure {runs}")
        self.output["runs"] = runs


class RetriedThenSkipped(Action):
    rescue = Retry(1, backoff=5, then=Skip)
    runs: Counter[str] = Counter()

    def run(self) -> None:
        raise RuntimeError(f"down, run {_bump(RetriedThenSkipped.runs, self.execution_plan_id)}")


class FinalizeCounted(Action):
    """A finalize step ahead of the flaky one: the phase runs again from its start."""

    calls: Counter[str] = Counter()

    def run(self) -> None:
        pass

    def finalize(self) -> None:
        _bump(FinalizeCounted.calls, self.execution_plan_id)


class FlakyFinalize(Action):
    rescue = Retry(2, backoff=5)
    calls: Counter[str] = Counter()

    def run(self) -> None:
        pass

    def finalize(self) -> None:
        calls = _bump(FlakyFinalize.calls, self.execution_plan_id)
        if calls <= self.input["failures"]:
            raise RuntimeError(f"finalize hiccup {calls}")


class TakesSkip(Action):
    """A run that takes events: it fails on its first call, and is told when skipped."""

    events: dict[str, list[str | None]] = {}

    def run(self, event: Any = None) -> None:
        seen = TakesSkip.events.setdefault(self.execution_plan_id, [])
        seen.append(None if event is None else type(event).__name__)
        if isinstance(event, SkipEvent):
            self.output["skipped_because"] = self.error.message if self.error else None
            return
        raise RuntimeError("evented broke")


class PlainBreaks(Action):
    """A plain ``def run(self)`` that fails, counting its calls per plan."""

    calls: Counter[str] = Counter()

    def run(self) -> None:
        _bump(PlainBreaks.calls, self.execution_plan_id)
        raise RuntimeError("plain broke")


# -- 1. Pause ------------------------------------------------------------------------------


class PausesOneBranch(Action):
    def plan(self) -> None:
        with self.concurrence():
            self.plan_action(Breaks, {"name": "broken"})
            with self.sequence():
                self.plan_action(Works, {"name": "first"})
                self.plan_action(Works, {"name": "second"})


def test_a_failed_step_pauses_the_plan_and_its_sibling_branch_completes(world: Driver) -> None:
    plan = world.run(PausesOneBranch)
    assert outcome(plan) == {
        "plan": ("paused", "error"),
        "steps": {
            "broken/run": ("error", 1, 0, "RuntimeError", "broken broke"),
            "first/run": ("success", 1, 0, None, None),
            "second/run": ("success", 1, 0, None, None),
        },
        "outputs": {"first": {"done": "first"}, "second": {"done": "second"}},
        "history": ["start execution", "pause execution"],
    }


# -- 2. Skip -------------------------------------------------------------------------------


class SkipsWhatDependsOnIt(Action):
    def plan(self) -> None:
        optional = self.plan_action(SkippableBreaks, {"name": "optional"})
        user = self.plan_action(UsesOutput, {"name": "user", "value": optional.output["x"]})
        self.plan_action(UsesOutput, {"name": "user of user", "value": user.output["got"]})
        self.plan_action(Finalizes, {"name": "independent"})


def test_skip_skips_the_step_what_references_it_and_their_finalize_steps(
    world: Driver,
) -> None:
    plan = world.run(SkipsWhatDependsOnIt)
    assert outcome(plan) == {
        "plan": ("stopped", "warning"),
        "steps": {
            # the skipped step keeps the error it was skipped for
            "optional/run": ("skipped", 1, 0, "RuntimeError", "optional broke"),
            "optional/finalize": ("skipped", 0, 0, None, None),
            "user/run": ("skipped", 0, 0, None, None),
            "user/finalize": ("skipped", 0, 0, None, None),
            "user of user/run": ("skipped", 0, 0, None, None),
            "user of user/finalize": ("skipped", 0, 0, None, None),
            "independent/run": ("success", 1, 0, None, None),
            "independent/finalize": ("success", 1, 0, None, None),
        },
        "outputs": {"independent": {"value": "independent"}},
        "history": ["start execution", "finish execution"],
    }
    assert SkippableBreaks.finalized[plan.id] == UsesOutput.finalized[plan.id] == 0
    assert Finalizes.calls[plan.id] == 1


# -- 3. Fail -------------------------------------------------------------------------------


class FailsInSequence(Action):
    def plan(self) -> None:
        with self.sequence():
            self.plan_action(Works, {"name": "before"})
            self.plan_action(FailsThePlan, {"name": "fatal"})
            self.plan_action(Works, {"name": "after"})
            self.plan_action(Finalizes, {"name": "never"})


def test_fail_stops_the_plan_and_pending_steps_stay_pending(world: Driver) -> None:
    plan = world.run(FailsInSequence)
    assert outcome(plan) == {
        "plan": ("stopped", "error"),
        "steps": {
            "before/run": ("success", 1, 0, None, None),
            "fatal/run": ("error", 1, 0, "RuntimeError", "fatal broke"),
            "after/run": ("pending", 0, 0, None, None),
            "never/run": ("pending", 0, 0, None, None),
            "never/finalize": ("pending", 0, 0, None, None),
        },
        "outputs": {"before": {"done": "before"}},
        "history": ["start execution", "finish execution"],
    }


# -- 4. Skip and Pause combined ------------------------------------------------------------


class SkipBesidePause(Action):
    def plan(self) -> None:
        self.plan_action(SkippableBreaks, {"name": "optional"})
        self.plan_action(Breaks, {"name": "required"})
        self.plan_action(Works, {"name": "fine"})


def test_skip_and_pause_in_one_plan_combine_to_pause(world: Driver) -> None:
    plan = world.run(SkipBesidePause)
    assert plan.rescue_strategy is Pause
    assert outcome(plan) == {
        "plan": ("paused", "error"),
        "steps": {
            "optional/run": ("error", 1, 0, "RuntimeError", "optional broke"),
            "optional/finalize": ("pending", 0, 0, None, None),
            "required/run": ("error", 1, 0, "RuntimeError", "required broke"),
            "fine/run": ("success", 1, 0, None, None),
        },
        "outputs": {"fine": {"done": "fine"}},
        "history": ["start execution", "pause execution"],
    }


# -- 5. auto_rescue=False ------------------------------------------------------------------


class OnlySkippable(Action):
    def plan(self) -> None:
        self.plan_action(SkippableBreaks, {"name": "optional"})
        self.plan_action(Works, {"name": "fine"})


def test_without_auto_rescue_a_skip_policy_pauses(open_world: Callable[..., Driver]) -> None:
    world = open_world(auto_rescue=False)
    plan = world.run(OnlySkippable)
    assert plan.rescue_strategy is Skip  # what auto-rescue would have applied
    assert outcome(plan) == {
        "plan": ("paused", "error"),
        "steps": {
            "optional/run": ("error", 1, 0, "RuntimeError", "optional broke"),
            "optional/finalize": ("pending", 0, 0, None, None),
            "fine/run": ("success", 1, 0, None, None),
        },
        "outputs": {"fine": {"done": "fine"}},
        "history": ["start execution", "pause execution"],
    }


# -- 6-8. Retry ----------------------------------------------------------------------------


def test_retry_restarts_the_step_until_it_succeeds(world: Driver) -> None:
    plan = world.run(Flaky, {"failures": 2})
    assert outcome(plan) == {
        "plan": ("stopped", "success"),
        "steps": {"Flaky/run": ("success", 3, 2, None, None)},
        "outputs": {"Flaky": {"runs": 3}},
        "history": ["start execution", "finish execution"],
    }
    assert world.now() == 30.0  # backoffs of 10 s then 20 s, virtual


def test_retry_runs_out_then_pauses_and_resume_gives_a_fresh_set(world: Driver) -> None:
    plan = world.run(Flaky, {"failures": 6})
    assert outcome(plan)["plan"] == ("paused", "error")
    assert outcome(plan)["steps"] == {
        "Flaky/run": ("error", 3, 2, "RuntimeError", "flaky failure 3")
    }

    plan = world.resume(plan.id)  # still failing: two more retries, a fresh set
    assert outcome(plan)["plan"] == ("paused", "error")
    assert outcome(plan)["steps"] == {
        "Flaky/run": ("error", 6, 2, "RuntimeError", "flaky failure 6")
    }

    plan = world.resume(plan.id)  # now it succeeds at once; attempts counts on
    assert outcome(plan) == {
        "plan": ("stopped", "success"),
        "steps": {"Flaky/run": ("success", 7, 0, None, None)},
        "outputs": {"Flaky": {"runs": 7}},
        "history": [
            "start execution",
            "pause execution",
            "resume",
            "start execution",
            "pause execution",
            "resume",
            "start execution",
            "finish execution",
        ],
    }
    assert world.now() == 60.0  # 10 + 20, twice


def test_retry_then_skip_skips_once_the_retries_ran_out(world: Driver) -> None:
    plan = world.run(RetriedThenSkipped)
    assert outcome(plan) == {
        "plan": ("stopped", "warning"),
        "steps": {
            "RetriedThenSkipped/run": ("skipped", 2, 1, "RuntimeError", "down, run 2"),
        },
        "outputs": {},
        "history": ["start execution", "finish execution"],
    }
    assert RetriedThenSkipped.runs[plan.id] == 2  # a def run(self) is not called to skip


# -- 9. a failing finalize phase with Retry ------------------------------------------------


class FinalizeRetried(Action):
    def plan(self, failures: int) -> None:
        self.plan_action(FinalizeCounted, {"name": "counted"})
        self.plan_action(FlakyFinalize, {"name": "flaky", "failures": failures})


@pytest.mark.parametrize(
    ("failures", "plan_outcome", "error"),
    [
        (2, ("stopped", "success"), (None, None)),
        (3, ("paused", "error"), ("RuntimeError", "finalize hiccup 3")),
    ],
)
def test_retry_runs_a_failed_finalize_phase_again_from_its_start(
    world: Driver, failures: int, plan_outcome: tuple[str, str], error: tuple[Any, Any]
) -> None:
    plan = world.run(FinalizeRetried, failures)
    found = outcome(plan)
    assert found["plan"] == plan_outcome
    state = "success" if error == (None, None) else "error"
    assert found["steps"] == {
        "counted/run": ("success", 1, 0, None, None),
        "counted/finalize": ("success", 3, 0, None, None),
        "flaky/run": ("success", 1, 0, None, None),
        "flaky/finalize": (state, 3, 2, *error),
    }
    # each retry ran the whole phase again, the step ahead of the flaky one included
    assert FinalizeCounted.calls[plan.id] == FlakyFinalize.calls[plan.id] == 3
    assert world.now() == 15.0  # backoffs of 5 s and 10 s


# -- 10. a manual skip, then resume --------------------------------------------------------


class SkippedByHand(Action):
    def plan(self) -> None:
        with self.sequence():
            with self.concurrence():
                self.plan_action(TakesSkip, {"name": "evented"})
                self.plan_action(PlainBreaks, {"name": "plain"})
            self.plan_action(Works, {"name": "after"})


def test_a_manual_skip_then_resume_tells_only_runs_that_take_events(world: Driver) -> None:
    paused = world.run(SkippedByHand)
    assert outcome(paused)["plan"] == ("paused", "error")
    world.skip(paused.id, step_id(paused, "evented"))
    world.skip(paused.id, step_id(paused, "plain"))
    plan = world.resume(paused.id)
    assert outcome(plan) == {
        "plan": ("stopped", "warning"),
        "steps": {
            "evented/run": ("skipped", 1, 0, "RuntimeError", "evented broke"),
            "plain/run": ("skipped", 1, 0, "RuntimeError", "plain broke"),
            "after/run": ("success", 1, 0, None, None),
        },
        "outputs": {
            "evented": {"skipped_because": "evented broke"},
            "after": {"done": "after"},
        },
        "history": [
            "start execution",
            "pause execution",
            "skip",
            "skip",
            "resume",
            "start execution",
            "finish execution",
        ],
    }
    assert TakesSkip.events[plan.id] == [None, "Skip"]
    assert PlainBreaks.calls[plan.id] == 1


# -- 11. rescue_for_planned ----------------------------------------------------------------


class SkipsItsChildren(Action):
    """Its child's class says Pause; the parent overrides it with Skip."""

    def plan(self) -> None:
        self.plan_action(Breaks, {"name": "overridden"})
        self.plan_action(Works, {"name": "sibling"})

    def rescue_for_planned(self, action: Action) -> RescuePolicy | None:
        return Skip


class PausesItsChildren(Action):
    """Its child's class says Skip; the parent overrides it with Pause."""

    def plan(self) -> None:
        self.plan_action(SkippableBreaks, {"name": "overridden"})
        self.plan_action(Works, {"name": "sibling"})

    def rescue_for_planned(self, action: Action) -> RescuePolicy | None:
        return Pause if isinstance(action, SkippableBreaks) else None


def test_rescue_for_planned_overrides_a_childs_skip_or_pause(world: Driver) -> None:
    skipped = world.run(SkipsItsChildren)
    assert outcome(skipped) == {
        "plan": ("stopped", "warning"),
        "steps": {
            "overridden/run": ("skipped", 1, 0, "RuntimeError", "overridden broke"),
            "sibling/run": ("success", 1, 0, None, None),
        },
        "outputs": {"sibling": {"done": "sibling"}},
        "history": ["start execution", "finish execution"],
    }
    paused = world.run(PausesItsChildren)
    assert paused.rescue_strategy is Pause
    assert outcome(paused) == {
        "plan": ("paused", "error"),
        "steps": {
            "overridden/run": ("error", 1, 0, "RuntimeError", "overridden broke"),
            "overridden/finalize": ("pending", 0, 0, None, None),
            "sibling/run": ("success", 1, 0, None, None),
        },
        "outputs": {"sibling": {"done": "sibling"}},
        "history": ["start execution", "pause execution"],
    }


# -- more of the same rules: Retry then Fail or Skip, a skipped finalize, outputs ---------


class SkipRunRetried(Action):
    """Retry(1, then=Skip) with a run that takes events: told Skip once its retry failed."""

    rescue = Retry(1, backoff=5, then=Skip)
    events: dict[str, list[str | None]] = {}

    def run(self, event: Any = None) -> None:
        seen = SkipRunRetried.events.setdefault(self.execution_plan_id, [])
        seen.append(None if event is None else type(event).__name__)
        if isinstance(event, SkipEvent):
            if self.input.get("fail_on_skip"):
                raise RuntimeError("failed on skip as well")
            return
        raise RuntimeError(f"down, run {len(seen)}")


@pytest.mark.parametrize("fail_on_skip", [False, True])
def test_retry_then_skip_tells_a_run_that_takes_events_and_does_not_retry_its_skip(
    world: Driver, fail_on_skip: bool
) -> None:
    plan = world.run(SkipRunRetried, {"fail_on_skip": fail_on_skip})
    found = outcome(plan)
    if fail_on_skip:  # a rescue that fails again pauses the plan; a failed skip is not retried
        assert found["plan"] == ("paused", "error")
        assert found["steps"] == {
            "SkipRunRetried/run": ("error", 2, 1, "RuntimeError", "failed on skip as well")
        }
    else:
        assert found["plan"] == ("stopped", "warning")
        assert found["steps"] == {
            "SkipRunRetried/run": ("skipped", 2, 1, "RuntimeError", "down, run 2")
        }
    assert SkipRunRetried.events[plan.id] == [None, None, "Skip"]


class RetriedThenFails(Action):
    rescue = Retry(1, backoff=5, then=Fail)

    def run(self) -> None:
        raise RuntimeError("down for good")


def test_retry_then_fail_stops_the_plan(world: Driver) -> None:
    plan = world.run(RetriedThenFails)
    assert outcome(plan) == {
        "plan": ("stopped", "error"),
        "steps": {"RetriedThenFails/run": ("error", 2, 1, "RuntimeError", "down for good")},
        "outputs": {},
        "history": ["start execution", "finish execution"],
    }


def test_without_auto_rescue_retries_still_happen(open_world: Callable[..., Driver]) -> None:
    world = open_world(auto_rescue=False)
    plan = world.run(RetriedThenSkipped)
    assert plan.rescue_strategy is Skip  # what `then` suggests, left to a person
    assert outcome(plan)["plan"] == ("paused", "error")
    assert outcome(plan)["steps"] == {
        "RetriedThenSkipped/run": ("error", 2, 1, "RuntimeError", "down, run 2")
    }


class SkippableFinalize(Action):
    rescue = Skip

    def run(self) -> None:
        self.output["ran"] = True

    def finalize(self) -> None:
        raise RuntimeError("finalize broke")


class SkipsAFinalize(Action):
    def plan(self) -> None:
        self.plan_action(SkippableFinalize, {"name": "optional"})
        self.plan_action(Finalizes, {"name": "other"})


def test_skip_of_a_failed_finalize_step_runs_the_rest_of_the_phase_again(world: Driver) -> None:
    plan = world.run(SkipsAFinalize)
    assert outcome(plan) == {
        "plan": ("stopped", "warning"),
        "steps": {
            "optional/run": ("success", 1, 0, None, None),
            "optional/finalize": ("skipped", 1, 0, "RuntimeError", "finalize broke"),
            "other/run": ("success", 1, 0, None, None),
            "other/finalize": ("success", 1, 0, None, None),
        },
        "outputs": {"optional": {"ran": True}, "other": {"value": "other"}},
        "history": ["start execution", "finish execution"],
    }
    assert Finalizes.calls[plan.id] == 1  # after the failed one: run once, after the skip


def test_resume_of_a_failed_finalize_phase_runs_it_from_its_start(world: Driver) -> None:
    paused = world.run(FinalizeRetried, 4)
    assert outcome(paused)["plan"] == ("paused", "error")
    # Call 4 fails too: the fresh set of retries gives it another go, and call 5 succeeds.
    plan = world.resume(paused.id)
    assert outcome(plan)["plan"] == ("stopped", "success")
    assert outcome(plan)["steps"] == {
        "counted/run": ("success", 1, 0, None, None),
        "counted/finalize": ("success", 5, 0, None, None),
        "flaky/run": ("success", 1, 0, None, None),
        "flaky/finalize": ("success", 5, 1, None, None),
    }
    assert FinalizeCounted.calls[plan.id] == FlakyFinalize.calls[plan.id] == 5
    assert world.now() == 20.0  # 5 s and 10 s, then 5 s after the resume


class KeepsItsOutput(Action):
    """Counts its tries in its output: a retry gets the output the failure left."""

    rescue = Retry(2, backoff=1)

    def run(self) -> None:
        self.output["tries"] = self.output.get("tries", 0) + 1
        if self.output["tries"] < 3:
            raise RuntimeError(f"try {self.output['tries']}")


def test_a_retry_gets_the_output_its_failure_left(world: Driver) -> None:
    plan = world.run(KeepsItsOutput)
    assert outcome(plan) == {
        "plan": ("stopped", "success"),
        "steps": {"KeepsItsOutput/run": ("success", 3, 2, None, None)},
        "outputs": {"KeepsItsOutput": {"tries": 3}},
        "history": ["start execution", "finish execution"],
    }
