"""Run one run or finalize phase of one action: user code in, a `PhaseOutcome` out.

No threads and no storage here: the runtime calls `execute_run` / `execute_finalize` on a
worker thread (or awaits `execute_run_async` on the world's event loop) and persists the
outcome; the testing helpers call the same functions directly.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

from pydynflow.action import FINALIZE, RUN, Action, Suspend
from pydynflow.events import Timeout
from pydynflow.plan import ActionRecord, StepError
from pydynflow.serialization import normalize
from pydynflow.states import StepState

_accepts_event: dict[type, bool] = {}


@dataclass(slots=True)
class PhaseOutcome:
    """What one call of a phase produced."""

    state: StepState
    output: dict[str, Any]
    error: StepError | None
    progress: float
    execution_time: float
    exception: BaseException | None = None  # the live exception, for in-process callers
    suspend_callback: Any = None  # given to suspend(): run once the step is parked
    events: list[tuple[Any, float | None]] = field(default_factory=list)  # plan_event()s
    chunks: list[tuple[Any, str | None, Any]] = field(default_factory=list)  # output_chunk()s


def new_action(
    record: ActionRecord, phase: str, input: dict[str, Any] | None = None, world: Any = None
) -> Action:
    """Build the action object a phase runs on, from its stored record."""
    action = record.action_class.from_record(record, phase=phase)
    action.world = world
    if input is not None:
        action._input = type(action._input)(input)
    return action


_async_run: dict[type, bool] = {}


def is_async_run(action_class: type[Action]) -> bool:
    """Return whether ``action_class.run`` is an ``async def``."""
    found = _async_run.get(action_class)
    if found is None:
        run = getattr(action_class, "run", None)
        found = _async_run[action_class] = inspect.iscoroutinefunction(run)
    return found


def run_accepts_event(action_class: type[Action]) -> bool:
    """Return whether ``run`` takes an event argument (``run(self, event=None)``)."""
    found = _accepts_event.get(action_class)
    if found is None:
        run = action_class.run  # type: ignore[attr-defined]
        parameters = list(inspect.signature(run).parameters.values())[1:]
        found = _accepts_event[action_class] = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            for p in parameters
        )
    return found


def _run_args(action: Action, event: Any) -> tuple[Any, ...]:
    return (event,) if run_accepts_event(type(action)) else ()


def execute_run(action: Action, event: Any = None) -> PhaseOutcome:
    """Call ``action.run(event)`` and return what happened (never raises for user errors).

    A `Timeout` event goes to ``action.process_timeout()`` instead.
    """
    started = time.perf_counter()
    try:
        if isinstance(event, Timeout):
            action.process_timeout()
        else:
            action.run(*_run_args(action, event))  # type: ignore[attr-defined]
    except Suspend as suspended:
        return _finished(action, started, action.run_progress, suspended.callback)
    except Exception as exc:
        return _failed(action, exc, started)
    return _finished(action, started, action.run_progress)


async def execute_run_async(action: Action, event: Any = None) -> PhaseOutcome:
    """Await an ``async def run(event)`` and return what happened."""
    started = time.perf_counter()
    try:
        if isinstance(event, Timeout):
            action.process_timeout()
        else:
            await action.run(*_run_args(action, event))  # type: ignore[attr-defined]
    except Suspend as suspended:
        return _finished(action, started, action.run_progress, suspended.callback)
    except Exception as exc:
        return _failed(action, exc, started)
    return _finished(action, started, action.run_progress)


def execute_finalize(action: Action) -> PhaseOutcome:
    """Call ``action.finalize()`` and return what happened."""
    started = time.perf_counter()
    try:
        action.finalize()  # type: ignore[attr-defined]
    except Exception as exc:
        return _failed(action, exc, started)
    return _finished(action, started, action.finalize_progress)


def _finished(
    action: Action, started: float, progress_of: Any, suspended: Any = False
) -> PhaseOutcome:
    try:
        output = normalize(action.output, owner=type(action), field="output")
    except Exception as exc:
        return _failed(action, exc, started)
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
    )


def _failed(action: Action, exc: Exception, started: float) -> PhaseOutcome:
    try:  # keep what run wrote before failing, if it is storable
        output = normalize(action.output, owner=type(action), field="output")
    except Exception:
        output = {}
    elapsed = time.perf_counter() - started
    error = StepError.from_exception(exc)
    chunks = list(action._chunks)
    return PhaseOutcome(StepState.ERROR, output, error, 0.0, elapsed, exc, chunks=chunks)


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
    "execute_run",
    "execute_run_async",
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
