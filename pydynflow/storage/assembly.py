"""Rows into an `ExecutionPlan`: decoded, checked against each other, or marked invalid.

A plan is read from its plan row, its action rows and its step rows, plus the step records
its plan row keeps (`pydynflow.storage.rows.plan_step_record`; older ones are shorter, their
last columns take their defaults). Rows that do not fit together (a missing step or action)
or do not decode make an invalid plan that keeps its row fields (Dynflow's InvalidPlan).
"""

from __future__ import annotations

from typing import Any

from pydynflow.errors import CorruptData, DataConsistencyError, UnknownIdentifier
from pydynflow.flows import Concurrence, Flow, Sequence, decode_flow
from pydynflow.plan import ActionRecord, ExecutionPlan, HistoryEntry, Step, StepError
from pydynflow.states import Phase, PlanState, Result, StepState
from pydynflow.storage.codec import decode_at
from pydynflow.storage.models import from_db_datetime
from pydynflow.storage.rows import STEP_COLUMNS

__all__ = ["assemble_plan", "plan_step_rows"]


def assemble_plan(
    row: tuple[Any, ...],
    action_rows: list[tuple[Any, ...]],
    step_rows: list[tuple[Any, ...]],
) -> ExecutionPlan:
    """Return the plan its rows describe: its plan row (the values of `PLAN_COLUMNS`), its
    action rows and its step rows (`ACTION_COLUMNS`, `STEP_COLUMNS`), in id order.

    Rows that do not fit together or do not decode give a plan with ``valid=False`` (see
    `pydynflow.storage.Storage.load_plan`).
    """
    (
        plan_id,
        state,
        result,
        label,
        root_plan_step_id,
        started_at,
        ended_at,
        real_time,
        execution_time,
        run_flow,
        finalize_flow,
        plan_steps_blob,
        history_blob,
    ) = row
    plan = ExecutionPlan(
        id=plan_id,
        label=label,
        started_at=from_db_datetime(started_at),
        ended_at=from_db_datetime(ended_at),
        real_time=real_time or 0.0,
        execution_time=execution_time or 0.0,
        root_plan_step_id=root_plan_step_id,
    )
    plan.stored_result = Result(result) if result in Result._value2member_map_ else None
    problems: list[BaseException] = []
    try:
        plan.state = PlanState(state)
    except ValueError:
        plan.state = PlanState.STOPPED  # nothing may act on a plan we cannot read
        problems.append(DataConsistencyError(f"execution plan {plan_id}: unknown state {state!r}"))
    try:
        plan.history = _history(plan_id, history_blob)
    except (CorruptData, DataConsistencyError) as exc:
        problems.append(exc)
    if not problems:
        try:
            # Plan-phase steps kept in the plan row come first: a row of the same step
            # (a plan stored before schema 2) would win.
            step_rows = [*plan_step_rows(plan_id, plan_steps_blob), *step_rows]
            _fill(plan, run_flow, finalize_flow, action_rows, step_rows)
        except (CorruptData, DataConsistencyError) as exc:
            problems.append(exc)
    if not problems and plan.caller is not None:
        plan.has_hooks = True  # its stop wakes its caller (`pydynflow.hooks`)
    if problems:
        plan.steps, plan.actions = {}, {}
        plan.run_flow, plan.finalize_flow = Concurrence(), Sequence()
        plan.valid = False
        plan.exception = StepError.from_exception(problems[0])
    return plan


def _history(plan_id: str, blob: Any) -> list[HistoryEntry]:
    if blob is None:
        return []
    data = decode_at(blob, f"execution plan {plan_id}: execution_history")
    try:
        return [HistoryEntry.from_dict(entry) for entry in data]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataConsistencyError(
            f"execution plan {plan_id}: execution_history is malformed: {exc!r}"
        ) from exc


def _fill(
    plan: ExecutionPlan,
    run_flow: Any,
    finalize_flow: Any,
    action_rows: list[tuple[Any, ...]],
    step_rows: list[tuple[Any, ...]],
) -> None:
    plan_id = plan.id
    where = f"execution plan {plan_id}"
    if run_flow is not None:
        plan.run_flow = _flow_at(run_flow, f"{where}: run_flow")
    if finalize_flow is not None:
        plan.finalize_flow = _flow_at(finalize_flow, f"{where}: finalize_flow")  # type: ignore[assignment]
    actions: dict[int, ActionRecord] = {}
    for (
        _,
        action_id,
        class_name,
        caller_plan,
        caller_action,
        plan_step_id,
        run_step_id,
        finalize_step_id,
        input_blob,
        output_blob,
    ) in action_rows:
        at = f"{where}: action {action_id}"
        actions[action_id] = ActionRecord(
            id=action_id,
            execution_plan_id=plan_id,
            action_class_name=class_name,
            input=_payload_at(input_blob, f"{at} input"),
            output=_payload_at(output_blob, f"{at} output"),
            plan_step_id=plan_step_id,
            run_step_id=run_step_id,
            finalize_step_id=finalize_step_id,
            caller_execution_plan_id=caller_plan,
            caller_action_id=caller_action,
        )
    steps: dict[int, Step] = {}
    missing_actions: dict[int, list[str]] = {}
    for (
        _,
        step_id,
        action_id,
        state,
        phase,
        started_at,
        ended_at,
        real_time,
        execution_time,
        progress_done,
        progress_weight,
        attempts,
        queue,
        action_class,
        error_blob,
        children_blob,
        retries,
    ) in step_rows:
        at = f"{where}: step {step_id}"
        try:
            step_state, step_phase = StepState(state), Phase(phase)
        except ValueError as exc:
            raise DataConsistencyError(f"{at}: {exc}") from None
        error = None
        if error_blob is not None:
            # Decoded already (a dict) when it comes from the plan row's plan_steps.
            data = (
                error_blob if isinstance(error_blob, dict) else decode_at(error_blob, f"{at} error")
            )
            try:
                error = StepError.from_dict(data)
            except (KeyError, TypeError, AttributeError) as exc:
                raise DataConsistencyError(f"{at}: malformed error {exc!r}") from None
        children: list[int] | tuple[int, ...]
        if isinstance(children_blob, list):  # from the plan row's plan_steps
            children = children_blob
        else:
            children = [] if children_blob is None else decode_at(children_blob, f"{at} children")
        children = children or ()  # as planned: a leaf step shares the empty tuple
        action = actions.get(action_id)
        if action is None:
            missing_actions.setdefault(action_id, []).append(f"step {step_id}")
        steps[step_id] = Step(
            id=step_id,
            execution_plan_id=plan_id,
            action_id=action_id,
            action_class_name=action_class or (action.action_class_name if action else ""),
            phase=step_phase,
            state=step_state,
            error=error,
            started_at=from_db_datetime(started_at),
            ended_at=from_db_datetime(ended_at),
            real_time=real_time or 0.0,
            execution_time=execution_time or 0.0,
            progress_done=progress_done or 0.0,
            progress_weight=_number(progress_weight),  # type: ignore[arg-type]
            attempts=attempts or 0,
            retries=retries or 0,
            children=children,
            queue=queue or "default",
            action=action,
        )
    missing_steps: dict[int, list[str]] = {}

    def need(step_id: int | None, referrer: str) -> None:
        if step_id is not None and step_id not in steps:
            missing_steps.setdefault(step_id, []).append(referrer)

    need(plan.root_plan_step_id, "root_plan_step_id")
    for action in actions.values():
        need(action.plan_step_id, f"action {action.id}")
        need(action.run_step_id, f"action {action.id}")
        need(action.finalize_step_id, f"action {action.id}")
    for step in steps.values():
        for child in step.children:
            need(child, f"step {step.id} children")
    for name, flow in (("run_flow", plan.run_flow), ("finalize_flow", plan.finalize_flow)):
        for step_id in flow.all_step_ids():
            need(step_id, name)
    if missing_steps or missing_actions:
        parts = []
        if missing_steps:
            parts.append("missing steps: " + _describe_missing(missing_steps))
        if missing_actions:
            parts.append("missing actions: " + _describe_missing(missing_actions))
        raise DataConsistencyError(f"{where} is inconsistent; " + "; ".join(parts))
    plan.actions = actions
    plan.steps = dict(sorted(steps.items()))  # by id, wherever each step was kept


_OLDEST_RECORD = STEP_COLUMNS.index("retries")  # step columns of a schema-3 plan row record


def plan_step_rows(plan_id: str, blob: Any) -> list[tuple[Any, ...]]:
    """Return the step records kept in a plan row as step rows (``[]`` if none)."""
    if blob is None:
        return []
    records = decode_at(blob, f"execution plan {plan_id}: plan_steps")
    try:
        # A record from before the last columns were added is that much shorter: those
        # columns take their defaults (None).
        rows = [(plan_id, *record) for record in records]
        if any(not _OLDEST_RECORD <= len(row) <= len(STEP_COLUMNS) for row in rows):
            raise ValueError(f"a record is not {len(STEP_COLUMNS) - 1} values long")
        rows = [row + (None,) * (len(STEP_COLUMNS) - len(row)) for row in rows]
    except (TypeError, ValueError) as exc:
        raise DataConsistencyError(
            f"execution plan {plan_id}: plan_steps is malformed: {exc}"
        ) from None
    return rows


def _describe_missing(missing: dict[int, list[str]]) -> str:
    return ", ".join(
        f"{key} (referenced by {', '.join(dict.fromkeys(referrers))})"
        for key, referrers in sorted(missing.items())
    )


def _payload_at(blob: Any, where: str) -> dict[str, Any]:
    if blob is None:
        return {}
    value = decode_at(blob, where)
    if not isinstance(value, dict):
        raise DataConsistencyError(f"{where} is a {type(value).__name__}, not a dict")
    return value


def _flow_at(blob: Any, where: str) -> Flow:
    data = decode_at(blob, where)
    try:
        return decode_flow(data)
    except (UnknownIdentifier, TypeError, ValueError) as exc:
        raise DataConsistencyError(f"{where}: {exc}") from exc


def _number(value: Any) -> float | int:
    """Return a stored float, as an int when it is integral (``progress_weight``)."""
    if value is None:
        return 1
    value = float(value)
    return int(value) if value.is_integer() else value
