"""Test helpers shipped with the package: run one action's phases in isolation.

`create_and_plan_action` plans an action alone: the actions it plans are recorded in
``action.planned_actions`` with their arguments, not planned. `run_action` and
`finalize_action` then call its phases directly, with no world, thread or database.
"""

from __future__ import annotations

from typing import Any

from pydynflow.action import FINALIZE, RUN, Action
from pydynflow.errors import DynflowError
from pydynflow.phases import execute_finalize, execute_run
from pydynflow.plan import ExecutionPlan
from pydynflow.planning import Planner
from pydynflow.states import StepState
from pydynflow.testing.clock import ManagedClock

__all__ = ["ManagedClock", "create_and_plan_action", "finalize_action", "run_action"]


class _IsolatedPlanner(Planner):
    """A planner that records children instead of planning them."""

    def plan_child(
        self, parent: Action, action_class: type[Action], args: tuple[Any, ...], kwargs: dict
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

    Raises the planning error, if any. ``action.planned_actions`` lists ``(class, args,
    kwargs)`` for each action it planned.
    """
    plan = ExecutionPlan(id="testing-plan", label=action_class.label)
    planner = _IsolatedPlanner(plan, subscriptions=lambda _: [])
    step, action = planner._add_plan_step(action_class, parent=None)
    plan.root_plan_step_id = step.id
    plan.state = plan.state.PLANNING
    planner._execute_plan_step(step, action, args, kwargs, trigger=None)
    action._plan = plan  # type: ignore[attr-defined]
    return action


def run_action(action: Action, event: Any = None) -> Action:
    """Run the run phase of a planned (or already run) action; return it in the run phase.

    Raises the error the run raised, or `SerializationError` for an output JSON cannot hold.
    """
    if not type(action).has_run():
        raise DynflowError(f"{action.class_name()} has no run phase")
    running = _rephase(action, RUN)
    outcome = execute_run(running, event)
    if outcome.exception is not None:
        raise outcome.exception
    running._output = outcome.output
    return running


def finalize_action(action: Action) -> Action:
    """Run the finalize phase of an action; return it in the finalize phase."""
    if not type(action).has_finalize():
        raise DynflowError(f"{action.class_name()} has no finalize phase")
    finalizing = _rephase(action, FINALIZE)
    outcome = execute_finalize(finalizing)
    if outcome.exception is not None:
        raise outcome.exception
    return finalizing


def _rephase(action: Action, phase: str) -> Action:
    fresh = type(action)(
        id=action.id,
        execution_plan_id=action.execution_plan_id,
        input=dict(action.input),
        output=dict(action._output),
        phase=phase,
    )
    for name in ("plan_step_id", "run_step_id", "finalize_step_id", "planned_actions"):
        if hasattr(action, name):
            setattr(fresh, name, getattr(action, name))
    return fresh
