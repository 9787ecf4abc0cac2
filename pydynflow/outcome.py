"""`PhaseOutcome`: what one call of a run or finalize phase produced (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydynflow.plan import ActionRecord, Step, StepError
from pydynflow.states import StepState


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
    started_at: datetime | None = None  # when the code started (the worker's clock)


def failed_outcome(exc: BaseException) -> PhaseOutcome:
    """Return the outcome of a phase that could not run at all."""
    return PhaseOutcome(StepState.ERROR, {}, StepError.from_exception(exc), 0.0, 0.0, exc)


@dataclass(slots=True)
class FinalizeDone:
    """The finalize flow ran: its steps and records as they ended, and their output chunks."""

    steps: tuple[Step, ...]
    actions: tuple[ActionRecord, ...]
    chunks: tuple[tuple[Any, ...], ...] = ()
