"""Plan and step states, results, and Dynflow's transition tables (enforced)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydynflow.errors import InvalidTransition


class PlanState(StrEnum):
    """The lifecycle state of an execution plan."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    PLANNING = "planning"
    PLANNED = "planned"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class StepState(StrEnum):
    """The state of one step (one phase of one action)."""

    SCHEDULING = "scheduling"
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    SUSPENDED = "suspended"
    SKIPPING = "skipping"
    SKIPPED = "skipped"
    ERROR = "error"
    CANCELLED = "cancelled"


class Result(StrEnum):
    """The result of an execution plan, computed over all of its steps."""

    PENDING = "pending"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """The phase a step belongs to."""

    PLAN = "plan"
    RUN = "run"
    FINALIZE = "finalize"


P, S = PlanState, StepState

PLAN_TRANSITIONS: Mapping[PlanState, frozenset[PlanState]] = {
    P.PENDING: frozenset({P.STOPPED, P.SCHEDULED, P.PLANNING}),
    P.SCHEDULED: frozenset({P.PLANNING, P.STOPPED}),
    P.PLANNING: frozenset({P.PLANNED, P.STOPPED}),
    P.PLANNED: frozenset({P.RUNNING, P.STOPPED}),
    P.RUNNING: frozenset({P.PAUSED, P.STOPPED}),
    P.PAUSED: frozenset({P.RUNNING, P.STOPPED}),
    P.STOPPED: frozenset(),
}

STEP_TRANSITIONS: Mapping[Phase, Mapping[StepState, frozenset[StepState]]] = {
    Phase.PLAN: {
        S.SCHEDULING: frozenset({S.PENDING, S.ERROR, S.CANCELLED}),
        S.PENDING: frozenset({S.RUNNING, S.ERROR, S.CANCELLED}),
        S.RUNNING: frozenset({S.SUCCESS, S.ERROR, S.CANCELLED}),
    },
    Phase.RUN: {
        S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.ERROR}),
        S.RUNNING: frozenset({S.SUCCESS, S.ERROR, S.SUSPENDED}),
        S.SUCCESS: frozenset({S.SUSPENDED}),
        S.SUSPENDED: frozenset({S.RUNNING, S.ERROR}),
        S.SKIPPING: frozenset({S.ERROR, S.SKIPPED}),
        S.ERROR: frozenset({S.SKIPPING, S.RUNNING}),
    },
    Phase.FINALIZE: {
        S.PENDING: frozenset({S.RUNNING, S.SKIPPED}),
        S.RUNNING: frozenset({S.SUCCESS, S.ERROR}),
        S.SUCCESS: frozenset({S.PENDING}),
        S.ERROR: frozenset({S.PENDING, S.SKIPPED}),
    },
}


def check_plan_transition(current: PlanState, new: PlanState) -> None:
    """Raise `InvalidTransition` unless a plan may move from ``current`` to ``new``."""
    # StrEnum members hash and compare as their values: plain strings look up the same.
    if new not in PLAN_TRANSITIONS[current]:
        raise InvalidTransition(f"execution plan cannot move from {current} to {new}")


_NOWHERE: frozenset[StepState] = frozenset()


def check_step_transition(phase: Phase, current: StepState, new: StepState) -> None:
    """Raise `InvalidTransition` unless a ``phase`` step may move from ``current`` to ``new``."""
    if new not in STEP_TRANSITIONS[phase].get(current, _NOWHERE):
        raise InvalidTransition(f"{phase} step cannot move from {current} to {new}")


def compute_result(states: list[StepState] | tuple[StepState, ...]) -> Result:
    """Apply Dynflow's result rule to the states of all steps of a plan."""
    present = set(states)
    if S.CANCELLED in present:
        return Result.CANCELLED
    if S.ERROR in present:
        return Result.ERROR
    if present & {S.SKIPPING, S.SKIPPED}:
        return Result.WARNING
    if present <= {S.SUCCESS}:
        return Result.SUCCESS
    return Result.PENDING
