"""Snapshots of plans, steps and actions, and the table rows they encode into.

The engine's threads take *snapshots* (`plan_snapshot`, `step_snapshot`, `action_snapshot`):
named tuples of plain values nothing changes later, cheap to take and to pickle. The writer
turns them into rows (`Rows.plan_row_of` and friends: encoding, compression, time formats),
off the engine's threads. A plan's row also carries its plan-phase steps, and a new plan's
unstarted ones (`row_steps`), as step records: a step snapshot without its plan id, stored
as a JSON array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar, cast

from pydynflow.flows import encode_flow
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.states import Phase, StepState
from pydynflow.storage.codec import encode
from pydynflow.storage.sql import StoreBase
from pydynflow.storage.times import EPOCH, MICROSECOND, iso, micros

__all__ = [
    "ACTION_COLUMNS",
    "PLAN_COLUMNS",
    "PLAN_META_COLUMNS",
    "STEP_COLUMNS",
    "ActionSnapshot",
    "PlanSnapshot",
    "Rows",
    "StepSnapshot",
    "action_snapshot",
    "plan_snapshot",
    "row_steps",
    "step_snapshot",
]

PLAN_COLUMNS = (
    "uuid",
    "state",
    "result",
    "label",
    "root_plan_step_id",
    "started_at",
    "ended_at",
    "real_time",
    "execution_time",
    "run_flow",
    "finalize_flow",
    "plan_steps",
    "execution_history",
)
"""A plan row's columns, in the order of `Rows.plan_row_of`'s values."""
PLAN_META_COLUMNS = PLAN_COLUMNS[:9] + ("execution_history",)
"""The columns a metadata-only update of a plan row writes (no flows, no step records)."""
ACTION_COLUMNS = (
    "execution_plan_uuid",
    "id",
    "class",
    "caller_execution_plan_id",
    "caller_action_id",
    "plan_step_id",
    "run_step_id",
    "finalize_step_id",
    "input",
    "output",
)
"""An action row's columns, in the order of `ActionSnapshot`'s fields."""
STEP_COLUMNS = (
    "execution_plan_uuid",
    "id",
    "action_id",
    "state",
    "phase",
    "started_at",
    "ended_at",
    "real_time",
    "execution_time",
    "progress_done",
    "progress_weight",
    "attempts",
    "queue",
    "action_class",
    "error",
    "children",
    "retries",  # last: a plan row's older step records (one value shorter) still load
)
"""A step row's columns, in the order of `StepSnapshot`'s fields."""
_EMPTY_LIST = encode([])

HistoryRecord = tuple[int, str, Any, Any]
"""One history entry in a `PlanSnapshot`: (`micros` of its time, name, world id, details)."""
StepRecord = tuple[Any, ...]
"""A step as its plan row keeps it: its `StepSnapshot` without the plan id."""
PlanFlows = tuple[Any, Any, list[StepRecord]]
"""A full plan row's extras: its run flow's data, its finalize flow's, its step records."""


class PlanSnapshot(NamedTuple):
    """A plan row's values as `plan_snapshot` took them (times as `micros`)."""

    plan_id: str
    state: str
    result: str
    label: str | None
    root_plan_step_id: int | None
    started_at: int | None
    ended_at: int | None
    real_time: float
    execution_time: float
    history: list[HistoryRecord]
    flows: PlanFlows | None
    """None for a metadata-only update; else the plan's flows and the steps its row keeps."""


class StepSnapshot(NamedTuple):
    """A step row's values as `step_snapshot` took them (times as `micros`), in the order of
    `STEP_COLUMNS`."""

    plan_id: str
    step_id: int
    action_id: int
    state: str
    phase: str
    started_at: int | None
    ended_at: int | None
    real_time: float
    execution_time: float
    progress_done: float
    progress_weight: float
    attempts: int
    queue: str
    action_class: str
    error: dict[str, Any] | None
    """`pydynflow.plan.StepError.to_dict`, not yet encoded."""
    children: tuple[int, ...]
    retries: int


class ActionSnapshot(NamedTuple):
    """An action row's values as `action_snapshot` took them, in the order of
    `ACTION_COLUMNS` (its input and output not yet encoded)."""

    plan_id: str
    action_id: int
    action_class: str
    caller_plan_id: str | None
    caller_action_id: int | None
    plan_step_id: int | None
    run_step_id: int | None
    finalize_step_id: int | None
    input: dict[str, Any]
    output: dict[str, Any]


assert StepSnapshot._fields[-1] == STEP_COLUMNS[-1] and len(StepSnapshot._fields) == len(
    STEP_COLUMNS
)
assert len(ActionSnapshot._fields) == len(ACTION_COLUMNS)

RECORD_STEP_ID = StepSnapshot._fields.index("step_id") - 1
"""Where a `StepRecord` holds its step's id."""
RECORD_STATE = StepSnapshot._fields.index("state") - 1
"""Where a `StepRecord` holds its step's state."""

_T = TypeVar("_T", bound=tuple[Any, ...])


def _maker(cls: type[_T]) -> Callable[[tuple[Any, ...]], _T]:
    # Calling a NamedTuple class runs a Python ``__new__``; ``tuple.__new__`` copies the
    # values in C, at a fraction of the cost (one call per state change, and per value the
    # writer's pipe brings).
    return cast(Callable[[tuple[Any, ...]], _T], functools.partial(tuple.__new__, cls))


make_plan_snapshot = _maker(PlanSnapshot)
"""Return a `PlanSnapshot` of its values, given in field order as one tuple."""
make_step_snapshot = _maker(StepSnapshot)
"""Return a `StepSnapshot` of its values, given in field order as one tuple."""
make_action_snapshot = _maker(ActionSnapshot)
"""Return an `ActionSnapshot` of its values, given in field order as one tuple."""


def plan_snapshot(plan: ExecutionPlan, *, full: bool = False, new: bool = False) -> PlanSnapshot:
    """Snapshot ``plan``'s row: metadata and history, plus its flows when ``full``.

    Its ``flows`` are None, or (when ``full``, for a valid plan) its flows and the steps its
    row carries, which then need no rows of their own (`row_steps`): its plan-phase steps,
    and for a ``new`` plan (never stored) also the steps that have not started. A step's own
    row, once written, wins over the plan row's copy.
    """
    flows = None
    if full and plan.valid:
        flows = (
            encode_flow(plan.run_flow),
            encode_flow(plan.finalize_flow),
            [
                step_snapshot(step)[1:]  # `plan_step_record`, without one call per step
                for step in plan.steps.values()
                if step.phase == Phase.PLAN or (new and step.state == StepState.PENDING)
            ],
        )
    return make_plan_snapshot(
        (
            plan.id,
            str(plan.state),
            str(plan.result),
            plan.label,
            plan.root_plan_step_id,
            micros(plan.started_at),
            micros(plan.ended_at),
            plan.real_time,
            plan.execution_time,
            [(micros(e.time), e.name, e.world_id, e.details) for e in plan.history],
            flows,
        )
    )


def step_snapshot(step: Step) -> StepSnapshot:
    """Snapshot one step's row."""
    error = step.error
    # `micros`, inline for the usual aware times: four snapshots per step run.
    started_at, ended_at = step.started_at, step.ended_at
    started: int | None = None
    ended: int | None = None
    if started_at is not None:
        started = (started_at - EPOCH) // MICROSECOND if started_at.tzinfo else micros(started_at)
    if ended_at is not None:
        ended = (ended_at - EPOCH) // MICROSECOND if ended_at.tzinfo else micros(ended_at)
    return make_step_snapshot(
        (
            step.execution_plan_id,
            step.id,
            step.action_id,
            str(step.state),
            str(step.phase),
            started,
            ended,
            step.real_time,
            step.execution_time,
            step.progress_done,
            step.progress_weight,
            step.attempts,
            step.queue,
            step.action_class_name,
            None if error is None else error.to_dict(),
            tuple(step.children),
            step.retries,
        )
    )


def action_snapshot(action: ActionRecord) -> ActionSnapshot:
    """Snapshot one action's row."""
    return make_action_snapshot(
        (
            action.execution_plan_id,
            action.id,
            action.action_class_name,
            action.caller_execution_plan_id,
            action.caller_action_id,
            action.plan_step_id,
            action.run_step_id,
            action.finalize_step_id,
            action.input,
            action.output,
        )
    )


def plan_step_record(step: Step) -> StepRecord:
    """Return a step as kept in its plan row: its snapshot without the plan id.

    Its times stay integer microseconds since the epoch (`micros`): no formatting in the
    writer nor parsing on load. Rows written before kept ISO text there; both load
    (`pydynflow.storage.models.from_db_datetime`). Encoded as JSON, its tuples are arrays.
    """
    return step_snapshot(step)[1:]


def row_steps(steps: Iterable[Step], *, new: bool = False) -> list[Step]:
    """Return the steps of ``steps`` that a plan's full row does not carry (see
    `plan_snapshot`): not plan-phase, and for a ``new`` plan not pending either.

    A new plan's pending steps go in its row because each of them is written again once it
    runs: inserting them as rows as well would be paid twice.
    """
    if new:
        return [s for s in steps if s.phase != Phase.PLAN and s.state != StepState.PENDING]
    return [step for step in steps if step.phase != Phase.PLAN]


class Rows(StoreBase):
    """Snapshots and their rows: the part of `Storage` the writer's encoding runs through."""

    plan_snapshot = staticmethod(plan_snapshot)
    step_snapshot = staticmethod(step_snapshot)
    action_snapshot = staticmethod(action_snapshot)

    def plan_row_of(self, snapshot: PlanSnapshot) -> tuple[bool, tuple[Any, ...]]:
        """Encode a `plan_snapshot`; return (whether it has its flows, the row's values).

        The values are those of `PLAN_COLUMNS`, or of `PLAN_META_COLUMNS` without flows.
        """
        time_value = self._time_value
        (
            plan_id,
            state,
            result,
            label,
            root,
            started,
            ended,
            real,
            execution,
            history_records,
            flows,
        ) = snapshot
        history = [  # HistoryEntry.to_dict
            {"time": iso(time), "name": name, "world_id": world_id}
            if details is None
            else {"time": iso(time), "name": name, "world_id": world_id, "details": details}
            for time, name, world_id, details in history_records
        ]
        meta = (plan_id, state, result, label, root, time_value(started), time_value(ended))
        if flows is None:
            return False, (*meta, real, execution, encode(history))
        run, finalize, plan_steps = flows
        return True, (
            *meta,
            real,
            execution,
            encode(run),
            encode(finalize),
            encode(plan_steps),
            encode(history),
        )

    def step_row_of(self, snapshot: StepSnapshot) -> tuple[Any, ...]:
        """Encode a `step_snapshot` into the step's row (the values of `STEP_COLUMNS`)."""
        time_value = self._time_value
        (
            plan_id,
            step_id,
            action_id,
            state,
            phase,
            started,
            ended,
            real,
            execution,
            done,
            weight,
            attempts,
            queue,
            action_class,
            error,
            children,
            retries,
        ) = snapshot
        return (
            plan_id,
            step_id,
            action_id,
            state,
            phase,
            time_value(started),
            time_value(ended),
            real,
            execution,
            done,
            weight,
            attempts,
            queue,
            action_class,
            None if error is None else encode(error),
            _EMPTY_LIST if not children else encode(list(children)),
            retries,
        )

    @staticmethod
    def action_row_of(snapshot: ActionSnapshot) -> tuple[Any, ...]:
        """Encode an `action_snapshot` into the action's row (the values of `ACTION_COLUMNS`)."""
        return (*snapshot[:8], encode(snapshot.input), encode(snapshot.output))
