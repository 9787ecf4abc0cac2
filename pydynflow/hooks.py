"""Execution-plan hooks: ``@on_plan`` makes an action method run when its plan changes state.

A hook runs once per transition of its plan, for every action of the plan whose class
declares one for the new state, after the transition is committed: the commit that stores
a transition takes the states the plan entered since the previous one (`take_hook_calls`)
with a snapshot of the plan, and the world runs them off the plan's critical path
(`pydynflow.actors.hook_runner`). An exception in a hook is logged and changes nothing.

A plan records the states it enters only once some class of the process declares a hook,
and stops as soon as a commit finds that none of its own actions does. A sub-plan always
records them: the commit that stores its stop (or its pause) also wakes its caller, the
`WithSubPlans` parent (`HookCalls.caller`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import FunctionType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydynflow.action import PRESENT
from pydynflow.states import PlanState, Result

if TYPE_CHECKING:
    from pydynflow.plan import ActionRecord, ExecutionPlan

__all__ = [
    "HOOK_KINDS",
    "PLAN_STATES",
    "HookCalls",
    "hooks_of",
    "on_plan",
    "record_transition",
    "run_hook_calls",
    "take_hook_calls",
]

PLAN_STATES: tuple[str, ...] = tuple(state.value for state in PlanState)
"""The kinds a bare ``@on_plan()`` registers: every plan state."""

HOOK_KINDS: tuple[str, ...] = (*PLAN_STATES, "success", "failure")
"""Every kind of hook: the plan states, and ``success``/``failure``, which follow ``stopped``."""

_FAILURES = (Result.ERROR, Result.WARNING, Result.CANCELLED)
_MARK = "_pydynflow_on_plan"

declared = False
"""Whether some method of this process was made a hook (else plans record no transitions)."""

_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def on_plan(method: _F, /) -> _F: ...


@overload
def on_plan(*kinds: str) -> Callable[[_F], _F]: ...


def on_plan(*kinds: Any) -> Any:
    """Make the decorated action method an execution-plan hook for ``kinds``.

    ``@on_plan("success", "failure")`` runs ``method(self, plan)`` after the plan stopped;
    ``@on_plan()`` (or ``@on_plan``) runs it on every state the plan enters, but not on
    ``success`` and ``failure``. Stacking decorators adds kinds. Subclasses inherit hooks:
    an override without the decorator is called for the inherited kinds, one with it
    declares its own kinds, and setting the name to None turns the hook off.

    Raises:
        ValueError: a kind is not one of `HOOK_KINDS`.
    """
    if len(kinds) == 1 and isinstance(kinds[0], FunctionType):
        return on_plan()(kinds[0])
    chosen = frozenset(str(kind) for kind in kinds) if kinds else frozenset(PLAN_STATES)
    unknown = sorted(chosen - set(HOOK_KINDS))
    if unknown:
        raise ValueError(f"unknown hook kind {unknown[0]!r}: one of {', '.join(HOOK_KINDS)}")

    def decorate(method: _F) -> _F:
        global declared
        if not isinstance(method, FunctionType):
            raise TypeError(f"@on_plan decorates action methods, not {method!r}")
        setattr(method, _MARK, getattr(method, _MARK, frozenset()) | chosen)
        declared = True
        return method

    return decorate


_by_class: dict[type, Mapping[str, tuple[str, ...]]] = {}


def hooks_of(action_class: type) -> Mapping[str, tuple[str, ...]]:
    """Return the hooks of ``action_class``: kind -> names of the methods to call, in order."""
    found = _by_class.get(action_class)
    if found is None:
        found = _by_class[action_class] = _collect(action_class)
    return found


def _collect(action_class: type) -> Mapping[str, tuple[str, ...]]:
    kinds_by_name: dict[str, frozenset[str]] = {}
    for klass in reversed(action_class.__mro__):
        for name, value in vars(klass).items():
            marked = getattr(value, _MARK, None) if isinstance(value, FunctionType) else None
            if marked is not None:
                kinds_by_name[name] = marked
            elif value is None:
                kinds_by_name.pop(name, None)
    by_kind: dict[str, list[str]] = {}
    for name, kinds in kinds_by_name.items():
        for kind in HOOK_KINDS:
            if kind in kinds:
                by_kind.setdefault(kind, []).append(name)
    return {kind: tuple(names) for kind, names in by_kind.items()}


def record_transition(plan: ExecutionPlan, old: PlanState, new: PlanState) -> None:
    """Note that ``plan`` entered ``new``, for the hooks its next commit hands out.

    Leaving ``pending`` notes ``pending`` first: a plan is first stored after its creation.
    """
    states = plan.hook_states
    if states is None:
        states = plan.hook_states = [PlanState.PENDING] if old == PlanState.PENDING else []
    states.append(new)


@dataclasses.dataclass(frozen=True, slots=True)
class HookCalls:
    """The hooks one commit of a plan calls: for each kind in turn, those of each action.

    ``plan`` is a snapshot of the plan as that commit stored it; ``actions`` snapshots of
    the records of its actions that declare a hook, in id order. ``caller``: for a sub-plan
    that stopped or paused in that commit, ``(plan id, action id)`` of its caller, to wake.
    """

    plan: ExecutionPlan
    kinds: tuple[str, ...]
    actions: tuple[ActionRecord, ...]
    caller: tuple[str, int] | None = None

    def plan_for(self, kind: str) -> ExecutionPlan:
        """Return the plan as a hook of ``kind`` sees it: in that state."""
        state = PlanState.STOPPED if kind in ("success", "failure") else PlanState(kind)
        if state == self.plan.state:
            return self.plan
        return dataclasses.replace(self.plan, state=state)


def take_hook_calls(plan: ExecutionPlan) -> HookCalls | None:
    """Take the states ``plan`` entered since its last commit; return the hooks they call.

    Called where the commit is prepared, on the thread changing the plan: what is returned
    is a snapshot, unaffected by later changes. None if no action of the plan has a hook
    for them (and a plan without hooks records nothing from now on).
    """
    states, plan.hook_states = plan.hook_states, None
    if not states:
        return None
    hooked = [record for _, record in sorted(plan.actions.items()) if hooks_of(record.action_class)]
    caller = plan.caller
    if caller is not None and not _ENDS.isdisjoint(states):
        return HookCalls(
            _snapshot(plan), _kinds(plan, states), tuple(map(_copy_record, hooked)), caller
        )
    if not hooked:
        plan.has_hooks = caller is not None
        return None
    plan.has_hooks = True
    kinds = _kinds(plan, states)
    wanted = {kind for record in hooked for kind in hooks_of(record.action_class)}
    if wanted.isdisjoint(kinds):
        return None
    return HookCalls(_snapshot(plan), kinds, tuple(map(_copy_record, hooked)))


_ENDS = frozenset({PlanState.STOPPED, PlanState.PAUSED})
"""The states of a sub-plan that wake its caller."""


def _kinds(plan: ExecutionPlan, states: list[PlanState]) -> tuple[str, ...]:
    kinds: list[str] = []
    for state in states:
        kinds.append(state.value)
        if state == PlanState.STOPPED:
            kinds.append("failure" if plan.result in _FAILURES else "success")
    return tuple(kinds)


def run_hook_calls(calls: HookCalls, log: Any) -> None:
    """Call the hooks of ``calls``; log an exception in one (with plan and action) and go on."""
    plan_id = calls.plan.id
    for kind in calls.kinds:
        plan = calls.plan_for(kind)
        for record in calls.actions:
            names = hooks_of(record.action_class).get(kind)
            if not names:
                continue
            for name in names:
                try:
                    action = record.action_class.from_record(record, PRESENT)
                    action.world = plan.world
                    getattr(action, name)(plan)
                except Exception:
                    log.exception(
                        "execution-plan hook failed",
                        plan_id=plan_id,
                        action_id=record.id,
                        action_class=record.action_class_name,
                        hook=name,
                        kind=kind,
                    )


def _snapshot(plan: ExecutionPlan) -> ExecutionPlan:
    """Copy what the engine changes in place: the plan row, its steps and actions."""
    actions = {aid: _copy_record(record) for aid, record in plan.actions.items()}
    steps = {}
    for step_id, step in plan.steps.items():
        copied = steps[step_id] = dataclasses.replace(step)
        copied.action = actions.get(step.action_id)
    return dataclasses.replace(
        plan,
        steps=steps,
        actions=actions,
        history=list(plan.history),
        hook_states=None,
        has_hooks=False,  # a snapshot records nothing
    )


def _copy_record(record: ActionRecord) -> ActionRecord:
    return dataclasses.replace(record, input=dict(record.input), output=dict(record.output))
