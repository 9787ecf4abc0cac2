"""Run one action's phases in isolation: no world, thread or database.

`create_and_plan_action` plans an action alone: the actions it plans are recorded in
``action.planned_actions`` with their arguments, not planned. `run_action` and
`finalize_action` then call its phases directly in the calling thread, through the
middleware the action class lists (a world's middleware does not apply: there is none).

A run that suspends is handled as the engine would, on virtual time: the events it planned
with a delay are armed on ``action.test_clock`` (a `ManagedClock`), the immediate ones are
queued in ``action.events_to_process``. `progress_action_time` moves the clock to the next
timer and runs the action with what it delivered; `process_action_events` runs it with the
queued events. Each run returns a new action object in the run phase: keep the latest
(``action = progress_action_time(action)``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydynflow.action import FINALIZE, PLAN, RUN, Action
from pydynflow.clock import Timer
from pydynflow.errors import DynflowError, UnknownStep
from pydynflow.middleware import class_stack
from pydynflow.phases import (
    PhaseOutcome,
    execute_finalize,
    execute_run,
    execute_run_async,
    is_async_run,
)
from pydynflow.plan import ExecutionPlan
from pydynflow.planning import Planner
from pydynflow.states import StepState
from pydynflow.testing.clock import ManagedClock

__all__ = [
    "DummyWorld",
    "create_and_plan_action",
    "finalize_action",
    "process_action_events",
    "progress_action_time",
    "run_action",
]

_WORLD_ATTRIBUTE = "_testing_world"


class DummyWorld:
    """The stand-in world of an action run by `run_action` (Dynflow's ``DummyWorld``).

    One is made per planned action, on its first `run_action`, and shared by every action
    object its runs and its finalize return (``action.world``). It holds the action's
    virtual ``clock`` and the events sent to it and not processed yet
    (``events_to_process``). ``action.suspended_ref.send(payload)`` and
    ``action.world.event(...)`` queue there, as on a real world.
    """

    def __init__(self) -> None:
        """Make a world with a fresh `ManagedClock` and no queued events."""
        self.clock = ManagedClock()
        """The action's virtual time: the timers of its delayed events (``test_clock``)."""
        self.events_to_process: list[Any] = []
        """Event payloads delivered to the action and not processed yet, in order."""
        self.action: Action | None = None
        """The latest action object a run returned."""
        self._timers: list[Timer] = []

    def event(self, plan_id: str, step_id: int, payload: Any, optional: bool = False) -> bool:
        """Queue ``payload`` for the action (as `World.event` would deliver it); return True.

        Raises:
            UnknownStep: ``step_id`` is not the action's run step.
            SerializationError: ``payload`` is neither an engine event nor JSON-shaped data.
        """
        from pydynflow.dispatch.operations import normalize_event

        payload = normalize_event(payload)
        action = self.action
        if action is not None and step_id != action.run_step_id:
            raise UnknownStep(
                f"the action under test has run step {action.run_step_id}, not {step_id}"
            )
        self.events_to_process.append(payload)
        return True

    def clear(self) -> None:
        """Forget what earlier runs planned: cancel their timers, drop the queued events."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.events_to_process.clear()

    def _arm(self, delay: float, payload: Any) -> None:
        self._timers = [timer for timer in self._timers if timer.pending]
        self._timers.append(
            self.clock.schedule(delay, lambda: self.events_to_process.append(payload))
        )

    def __repr__(self) -> str:
        return f"<DummyWorld now={self.clock.now()} events={self.events_to_process!r}>"


class _IsolatedPlanner(Planner):
    """A planner that records children instead of planning them."""

    def plan_child(
        self,
        parent: Action,
        action_class: type[Action],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Action:
        step, child = self._add_plan_step(action_class, parent=parent)
        step.state = StepState.SUCCESS
        if action_class.has_run():  # so that its output can still be referenced
            child.run_step_id = self._take_step_id()
        parent.planned_actions.append((action_class, args, kwargs))  # type: ignore[attr-defined]
        return child

    def _execute_plan_step(self, step: Any, action: Action, *args: Any, **kwargs: Any) -> None:
        action.planned_actions = []  # type: ignore[attr-defined]
        super()._execute_plan_step(step, action, *args, **kwargs)


def create_and_plan_action(action_class: type[Action], *args: Any, **kwargs: Any) -> Action:
    """Plan ``action_class(*args, **kwargs)`` alone and return the planned action.

    The action is in the plan phase, with ``state`` ``"success"``. ``planned_actions``
    lists ``(class, args, kwargs)`` for each action its ``plan()`` planned; those are
    recorded, not planned (see `assert_action_planned_with`).

    Raises:
        Exception: the error ``plan()`` raised, or `SerializationError` for an input that
            JSON cannot hold.
    """
    plan = ExecutionPlan(id="testing-plan", label=action_class.label)
    planner = _IsolatedPlanner(plan, subscriptions=lambda _: [], middleware=class_stack)
    step, action = planner._add_plan_step(action_class, parent=None)
    plan.root_plan_step_id = step.id
    plan.state = plan.state.PLANNING
    planner._execute_plan_step(step, action, args, kwargs, trigger=None)
    action._plan = plan  # type: ignore[attr-defined]
    _set(action, state=step.state)
    return action


def run_action(action: Action, event: Any = None) -> Action:
    """Run the run phase of ``action`` with ``event``; return a new action in the run phase.

    ``action`` is a planned action (`create_and_plan_action`) or one a previous run
    returned: the run starts from its input and its output so far. Like a fresh
    execution of the step, this first forgets what earlier runs planned (their timers are
    cancelled, ``events_to_process`` is emptied).

    The returned action has ``state`` (`StepState` ``"success"`` or ``"suspended"``),
    ``output``, ``world`` (the action's `DummyWorld`), ``test_clock`` (its `ManagedClock`,
    the same across runs) and ``events_to_process`` (a list). When the run suspends, the
    events it planned with a delay are armed on ``test_clock`` and the immediate ones are
    queued in ``events_to_process``; then the callback given to ``suspend()`` is called
    with ``action.suspended_ref`` (an exception from it propagates: the engine only logs
    it). An event planned by a run that does not suspend is dropped, as in the engine.

    Raises:
        Exception: the error the run raised (an ``async def run`` is awaited on a new
            event loop), or `SerializationError` for an output JSON cannot hold.
        DynflowError: the class has no run phase, or ``action`` was planned without one
            (no ``plan_self``), or it is in the finalize phase.
    """
    if not type(action).has_run():
        raise DynflowError(f"{action.class_name()} has no run phase")
    if action.phase == FINALIZE:
        raise DynflowError("run_action expects an action in the plan or run phase")
    if action.phase == PLAN and action.run_step_id is None:
        raise DynflowError(f"{action.class_name()} was planned without a run step (plan_self)")
    world = _world_of(action)
    world.clear()
    return _execute_run(action, event, world)


def progress_action_time(action: Action) -> Action:
    """Move the action's ``test_clock`` to its next timer and run what that delivered.

    Fires the earliest pending timer; if it queued an event, the action is run with the
    queued events (see `process_action_events`) and the latest action returned. Returns
    ``action`` itself when no timer is pending. Dynflow's ``progress_action_time``.

    Raises:
        DynflowError: ``action`` has not been run by `run_action`.
        Exception: the error a run raised (see `run_action`).
    """
    world = _require_world(action, "progress_action_time")
    if not world.clock.advance_to_next():
        return action
    return process_action_events(action)


def process_action_events(action: Action) -> Action:
    """Run the action with each event in ``events_to_process``, in order; return the latest.

    The queue is taken as it stands (events the runs queue wait for the next call). Like
    the engine, only a suspended step takes events: once a run succeeds, the remaining
    events are dropped. Dynflow's ``executor.progress`` of its testing world.

    Raises:
        DynflowError: ``action`` has not been run by `run_action`.
        Exception: the error a run raised (see `run_action`).
    """
    world = _require_world(action, "process_action_events")
    latest = world.action if world.action is not None else action
    events = list(world.events_to_process)
    world.events_to_process.clear()
    for event in events:
        if getattr(latest, "state", None) != StepState.SUSPENDED:
            break
        latest = _execute_run(latest, event, world)
    return latest


def finalize_action(action: Action) -> Action:
    """Run the finalize phase of ``action``; return a new action in the finalize phase.

    The returned action has ``state`` ``"success"`` and the output the finalize phase
    left (it starts from ``action``'s output, e.g. a run's).

    Raises:
        Exception: the error ``finalize()`` raised.
        DynflowError: the class has no finalize phase.
    """
    if not type(action).has_finalize():
        raise DynflowError(f"{action.class_name()} has no finalize phase")
    world = _world_of(action)
    finalizing = _rephase(action, FINALIZE, world)
    outcome = execute_finalize(finalizing)
    if outcome.exception is not None:
        raise outcome.exception
    finalizing._output = outcome.output
    _set(finalizing, state=outcome.state)
    return finalizing


# -- internals ----------------------------------------------------------------------------


def _execute_run(action: Action, event: Any, world: DummyWorld) -> Action:
    running = _rephase(action, RUN, world)
    outcome = _call_run(running, event)
    if outcome.exception is not None:
        raise outcome.exception
    running._output = outcome.output
    _set(
        running,
        state=outcome.state,
        test_clock=world.clock,
        events_to_process=world.events_to_process,
    )
    world.action = running
    if outcome.state == StepState.SUSPENDED:
        for payload, delay in outcome.events:
            if delay is None:
                world.events_to_process.append(payload)
            else:
                world._arm(delay, payload)
        if outcome.suspend_callback is not None:
            outcome.suspend_callback(running.suspended_ref)
    return running


def _call_run(action: Action, event: Any) -> PhaseOutcome:
    if is_async_run(type(action)):
        return asyncio.run(execute_run_async(action, event))
    return execute_run(action, event)


def _world_of(action: Action) -> DummyWorld:
    world: DummyWorld | None = getattr(action, _WORLD_ATTRIBUTE, None)
    if world is None:
        world = DummyWorld()
        setattr(action, _WORLD_ATTRIBUTE, world)
    return world


def _require_world(action: Action, helper: str) -> DummyWorld:
    world: DummyWorld | None = getattr(action, _WORLD_ATTRIBUTE, None)
    if world is None or world.action is None:
        raise DynflowError(f"{helper}() needs an action returned by run_action()")
    return world


def _rephase(action: Action, phase: str, world: DummyWorld) -> Action:
    fresh = action.renewed(phase)
    stack = class_stack(type(action))  # the class's own middleware (there is no world's)
    if stack.run or stack.finalize:
        fresh._middleware = stack
    for name in ("planned_actions", "_plan"):  # what planning in isolation recorded
        if hasattr(action, name):
            setattr(fresh, name, getattr(action, name))
    fresh.world = world
    setattr(fresh, _WORLD_ATTRIBUTE, world)
    return fresh


def _set(action: Action, **attributes: Any) -> None:
    for name, value in attributes.items():
        setattr(action, name, value)
