"""The messages actors send each other: small immutable records, one class per meaning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydynflow.actors.persistence import PlanRow
    from pydynflow.phases import PhaseOutcome
    from pydynflow.plan import ActionRecord, ExecutionPlan, Step

OnCommit = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class Claim:
    """Move a plan row to ``state`` only if it is in one of ``from_states`` (else fail)."""

    plan_id: str
    from_states: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Persist:
    """State changes to commit together; ``on_commit(error)`` runs after the commit.

    Rows are encoded by the sender (`pydynflow.storage.Storage.step_row` and friends), so
    nothing the sender changes afterwards can leak into the commit.
    """

    steps: tuple[tuple[Any, ...], ...] = ()
    actions: tuple[tuple[Any, ...], ...] = ()
    plans: tuple[PlanRow, ...] = ()
    claim: Claim | None = None
    on_commit: OnCommit | None = None


@dataclass(frozen=True, slots=True)
class Flush:
    """Tell the persistence actor to commit what it has gathered."""


@dataclass(frozen=True, slots=True)
class PhaseDone:
    """A step's user code returned (sent by the worker to the step actor)."""

    outcome: PhaseOutcome


@dataclass(frozen=True, slots=True)
class Committed:
    """The persistence actor committed (``error`` is None) or failed to."""

    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RunningCommitted:
    """The step's move to ``running`` is durable (or failed): its user code may start."""

    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A step actor is done with its step (committed): the supervisor's cue."""

    step: Step
    action: ActionRecord


@dataclass(frozen=True, slots=True)
class FinalizeDone:
    """The finalize flow ran: its steps and records as they ended."""

    steps: tuple[Step, ...]
    actions: tuple[ActionRecord, ...]


@dataclass(frozen=True, slots=True)
class ExecutePlan:
    """Ask the executor to run a plan (the object if at hand, else loaded by id)."""

    plan_id: str
    plan: ExecutionPlan | None
    future: Any


@dataclass(frozen=True, slots=True)
class PlanDone:
    """A supervisor finished its plan (paused or stopped), or could not start it."""

    plan_id: str
    plan: ExecutionPlan | None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Terminate:
    """Stop taking work; pause running plans once their running steps return."""

    future: Any


@dataclass(frozen=True, slots=True)
class Wind:
    """Tell a supervisor to start no new step and pause once its running steps return."""


@dataclass(slots=True)
class Batch:
    """What the persistence actor gathered since its last commit."""

    messages: list[Persist] = field(default_factory=list)
