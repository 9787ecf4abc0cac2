"""Run one run or finalize phase of one action: user code in, a `PhaseOutcome` out.

No threads and no storage here: the runtime calls `execute_run` / `execute_finalize` on a
worker thread (or awaits `execute_run_async` on the world's event loop) and persists the
outcome; the testing helpers call the same functions directly.

While the user code runs, structlog's context variables hold ``plan_id``, ``step_id``,
``action_class``, ``phase`` (and ``attempt`` when the caller knows it), so that a line the
user code logs with ``structlog.get_logger()`` says which step wrote it.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from structlog.contextvars import bind_contextvars, reset_contextvars

from pydynflow.action import (
    FINALIZE,
    RUN,
    Action,
    Suspend,
    is_async_run,
    run_accepts_event,
)
from pydynflow.errors import DynflowError
from pydynflow.events import Timeout
from pydynflow.middleware import Stack, WorldMiddleware, call, call_run, call_run_async
from pydynflow.outcome import FinalizeDone, PhaseOutcome, failed_outcome
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.registry import class_name
from pydynflow.serialization import normalize
from pydynflow.states import StepState


def new_action(
    record: ActionRecord,
    phase: str,
    input: dict[str, Any] | None = None,
    world: Any = None,
    middleware: WorldMiddleware | None = None,
) -> Action:
    """Build the action object a phase runs on, from its stored record.

    ``middleware``: the world's; the action carries its stack if one wraps its phases (to
    a worker process too).
    """
    action_class = record.action_class
    action = action_class.from_record(record, phase=phase)
    action.world = world
    if input is not None:
        action._input = type(action._input)(input)
    if middleware is not None:
        try:
            stack = middleware.stack(action_class)
        except DynflowError as exc:  # the world's and the class's rules form a cycle
            stack = Stack.unresolved(str(exc))
        if stack.run or stack.finalize:
            action._middleware = stack
    return action


def _run_args(action: Action, event: Any) -> tuple[Any, ...]:
    return (event,) if run_accepts_event(type(action)) else ()


def _call_run(action: Action, event: Any) -> Any:
    """The innermost layer of the run hooks: a `Timeout` goes to ``process_timeout``."""
    if isinstance(event, Timeout):
        return action.process_timeout()
    return action.run(*_run_args(action, event))  # type: ignore[attr-defined]


async def _await_run(action: Action, event: Any) -> Any:
    if isinstance(event, Timeout):
        return action.process_timeout()
    return await action.run(*_run_args(action, event))  # type: ignore[attr-defined]


def _bind(action: Action, step_id: int | None, phase: str, attempt: int | None) -> Any:
    """Bind the step's log context (one `bind_contextvars` call); return its reset tokens."""
    if attempt is None:
        return bind_contextvars(
            plan_id=action.execution_plan_id,
            step_id=step_id,
            action_class=class_name(type(action)),
            phase=phase,
        )
    return bind_contextvars(
        plan_id=action.execution_plan_id,
        step_id=step_id,
        action_class=class_name(type(action)),
        phase=phase,
        attempt=attempt,
    )


def execute_run(action: Action, event: Any = None, attempt: int | None = None) -> PhaseOutcome:
    """Call ``action.run(event)`` and return what happened (never raises for user errors).

    A `Timeout` event goes to ``action.process_timeout()`` instead. ``attempt``: the step's
    attempt number, for the log context.
    """
    tokens = _bind(action, action.run_step_id, RUN, attempt)
    begun, started = utcnow(), time.perf_counter()
    try:
        stack = action._middleware
        if stack is not None and stack.run:
            call_run(stack, action, event, lambda event: _call_run(action, event))
        elif isinstance(event, Timeout):
            action.process_timeout()
        else:
            action.run(*_run_args(action, event))  # type: ignore[attr-defined]
    except Suspend as suspended:
        return _finished(action, begun, started, action.run_progress, suspended.callback)
    except Exception as exc:
        return _failed(action, exc, begun, started)
    finally:
        reset_contextvars(**tokens)
    return _finished(action, begun, started, action.run_progress)


async def execute_run_async(
    action: Action, event: Any = None, attempt: int | None = None
) -> PhaseOutcome:
    """Await an ``async def run(event)`` and return what happened (see `execute_run`).

    It runs as a task of its own, in a context of its own: the log context is bound there
    and never reset (no tokens kept for the whole of a wait, which may be long).
    """
    _bind(action, action.run_step_id, RUN, attempt)
    begun, started = utcnow(), time.perf_counter()
    try:
        stack = action._middleware
        if stack is not None and stack.run:
            await call_run_async(stack, action, event, lambda event: _await_run(action, event))
        elif isinstance(event, Timeout):
            action.process_timeout()
        else:
            await action.run(*_run_args(action, event))  # type: ignore[attr-defined]
    except Suspend as suspended:
        return _finished(action, begun, started, action.run_progress, suspended.callback)
    except Exception as exc:
        return _failed(action, exc, begun, started)
    return _finished(action, begun, started, action.run_progress)


def execute_finalize(action: Action, *, attempt: int | None = None) -> PhaseOutcome:
    """Call ``action.finalize()`` and return what happened (see `execute_run`)."""
    tokens = _bind(action, action.finalize_step_id, FINALIZE, attempt)
    begun, started = utcnow(), time.perf_counter()
    try:
        stack = action._middleware
        if stack is not None and stack.finalize:
            call(stack.finalize, "finalize", action, action.finalize)  # type: ignore[attr-defined]
        else:
            action.finalize()  # type: ignore[attr-defined]
    except Exception as exc:
        return _failed(action, exc, begun, started)
    finally:
        reset_contextvars(**tokens)
    return _finished(action, begun, started, action.finalize_progress)


def execute_finalize_flow(
    steps: list[Step],
    records: dict[int, ActionRecord],
    actions: dict[int, Action],
    hooks: tuple[type, ...] = (),
    plan: ExecutionPlan | None = None,
) -> FinalizeDone:
    """Run a plan's finalize steps in order (on a worker); stop at the first failure.

    ``steps`` and ``records`` are copies (see `PlanExecution.finalize_work`), changed here;
    ``actions`` the action objects to call, by action id. ``hooks`` and ``plan``: the
    ``finalize_phase`` middleware around the whole phase and the plan they get (see
    `finalize_phase`); one that raises fails the phase on its first step (if no step failed).
    """
    chunks: list[tuple[Any, ...]] = []
    if not hooks:
        _finalize_steps(steps, records, actions, chunks)
    else:
        try:
            call(
                hooks,
                "finalize_phase",
                None,
                lambda plan: _finalize_steps(steps, records, actions, chunks),
                plan,
            )
        except Exception as exc:
            if steps and not any(step.state == StepState.ERROR for step in steps):
                steps[0].state = StepState.ERROR  # its place in the phase: the phase failed
                steps[0].error = StepError.from_exception(exc)
                steps[0].ended_at = utcnow()
    return FinalizeDone(tuple(steps), tuple(records.values()), tuple(chunks))


def finalize_phase(
    middleware: WorldMiddleware | None,
    plan: ExecutionPlan,
    steps: list[Step],
    records: dict[int, ActionRecord],
    world: Any = None,
) -> tuple[Any, ...]:
    """Return what `execute_finalize_flow` takes after its ``actions`` for the
    ``finalize_phase`` hooks of ``plan``: nothing when no middleware wraps the phase, else
    the hooks and a copy of the plan holding ``steps`` and ``records`` (which the phase
    changes as it runs), with ``world`` (None for a worker process)."""
    if not steps or middleware is None:
        return ()
    try:
        hooks = middleware.stack(records[steps[0].action_id].action_class).finalize_phase
    except DynflowError:  # its step says why (see `new_action`)
        return ()
    if not hooks:
        return ()
    view = copy.copy(plan)
    view.steps = {**plan.steps, **{step.id: step for step in steps}}
    view.actions = {**plan.actions, **records}
    view.history = list(plan.history)
    view.world = world
    return hooks, view


def _finalize_steps(
    steps: list[Step],
    records: dict[int, ActionRecord],
    actions: dict[int, Action],
    chunks: list[tuple[Any, ...]],
) -> None:
    failed = False
    for step in steps:
        if failed:
            break
        record = records[step.action_id]
        step.transition(StepState.RUNNING)
        step.attempts += 1
        outcome = execute_finalize(actions[step.action_id], attempt=step.attempts)
        step.started_at = step.started_at or outcome.started_at
        chunks.extend((record.execution_plan_id, record.id, *chunk) for chunk in outcome.chunks)
        step.transition(outcome.state)
        step.error = outcome.error
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        step.ended_at = utcnow()
        if step.started_at is not None:
            step.real_time = (step.ended_at - step.started_at).total_seconds()
        record.output = outcome.output
        failed = outcome.state == StepState.ERROR


def _finished(
    action: Action, begun: Any, started: float, progress_of: Any, suspended: Any = False
) -> PhaseOutcome:
    try:
        output = normalize(action.output, owner=type(action), field="output")
    except Exception as exc:
        return _failed(action, exc, begun, started)
    state = StepState.SUCCESS if suspended is False else StepState.SUSPENDED
    return PhaseOutcome(
        state,
        output,
        None,
        _progress(progress_of),
        time.perf_counter() - started,
        suspend_callback=None if suspended is False else suspended,
        events=list(action._planned_events),
        chunks=list(action._chunks),
        started_at=begun,
    )


def _failed(action: Action, exc: Exception, begun: Any, started: float) -> PhaseOutcome:
    try:  # keep what run wrote before failing, if it is storable
        output = normalize(action.output, owner=type(action), field="output")
    except Exception:
        output = {}
    elapsed = time.perf_counter() - started
    error = StepError.from_exception(exc)
    chunks = list(action._chunks)
    return PhaseOutcome(
        StepState.ERROR, output, error, 0.0, elapsed, exc, chunks=chunks, started_at=begun
    )


def _progress(progress_of: Any) -> float:
    try:
        return min(1.0, max(0.0, float(progress_of())))
    except Exception:  # a broken progress calculation must not fail the step
        return 0.5


__all__ = [
    "FINALIZE",
    "RUN",
    "PhaseOutcome",
    "execute_finalize",
    "execute_finalize_flow",
    "execute_run",
    "execute_run_async",
    "failed_outcome",
    "finalize_phase",
    "is_async_run",
    "new_action",
    "run_accepts_event",
]


def snapshot_outcome(action: Action) -> PhaseOutcome:
    """Return the outcome of an async run parking in ``wait_for_event``: its output so far.

    Raises `SerializationError` (inside the run) if the output cannot be stored.
    """
    output = normalize(action.output, owner=type(action), field="output")
    return PhaseOutcome(
        StepState.SUSPENDED,
        output,
        None,
        _progress(action.run_progress),
        0.0,
        events=list(action._planned_events),
        chunks=list(action._chunks),
    )
