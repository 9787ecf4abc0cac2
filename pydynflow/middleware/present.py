"""Present a plan to a reader: each action's ``present`` hooks may change the ``input`` and
``output`` a reader sees (mask a secret); what is stored stays as it was."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from pydynflow.errors import DynflowError
from pydynflow.middleware.stack import Stack, call


def _nothing() -> None:
    return None


def present_plan(plan: Any, stack_of: Callable[[type], Stack], *, shared: bool = False) -> Any:
    """Return ``plan`` with the actions that have ``present`` hooks presented.

    Each such action is rebuilt in the present phase with copies of its input and output
    (nested ones too), its hooks run, and what they left replaces its record. An action
    whose middleware cannot be ordered (a cycle) shows no input or output: its hooks might
    have hidden some. ``shared``: the plan is someone else's (the executor's): change a copy
    of it, else change it.
    """
    presented = {}
    for action_id, record in plan.actions.items():
        action_class = record.action_class
        try:
            hooks = stack_of(action_class).present
        except DynflowError:
            presented[action_id] = dataclasses.replace(record, input={}, output={})
            continue
        if not hooks:
            continue
        action = action_class.from_record(record, phase="present")
        action._input = copy.deepcopy(record.input)  # a plain dict: the hooks may change it
        action._output = copy.deepcopy(record.output)
        action.world = plan.world
        call(hooks, "present", action, _nothing)
        presented[action_id] = dataclasses.replace(
            record, input=action._input, output=action._output
        )
    if not presented:
        return plan
    if shared:
        plan = copy.copy(plan)
        plan.steps, plan.actions = dict(plan.steps), dict(plan.actions)
    for action_id, record in presented.items():
        plan.actions[action_id] = record
        for step_id in (record.plan_step_id, record.run_step_id, record.finalize_step_id):
            step = plan.steps.get(step_id) if step_id is not None else None
            if step is not None:
                if shared:
                    step = plan.steps[step_id] = copy.copy(step)
                step.action = record
    return plan
