"""The messages actors send each other: small immutable records, one class per meaning.

Immutable by convention, not ``frozen``: a frozen dataclass sets each field through
``object.__setattr__``, which makes it several times dearer to build, and every step sends
several messages. Nobody changes a message after sending it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydynflow.errors import EventRejected
from pydynflow.outcome import PhaseOutcome

if TYPE_CHECKING:
    from pydynflow.hooks import HookCalls
    from pydynflow.plan import ExecutionPlan

OnCommit = Callable[[BaseException | None], None]


class NotRunningHere(EventRejected):
    """An event for a plan this world's executor is not running (the caller checks the store)."""


@dataclass(slots=True)
class Claim:
    """Move a plan row to ``to_state`` only if it is in one of ``from_states`` (else write
    nothing of the change). ``to_state`` may be the state it is in: a guard that the plan is
    still there, in that state, when the change is written."""

    plan_id: str
    from_states: tuple[str, ...]
    to_state: str = "running"


@dataclass(slots=True)
class Persist:
    """State changes to commit together; ``on_commit(error)`` runs after the commit.

    Rows travel as snapshots taken by the sender (`pydynflow.storage.Storage.step_snapshot`
    and friends), so nothing the sender changes afterwards can leak into the commit.
    """

    steps: tuple[tuple[Any, ...], ...] = ()
    actions: tuple[tuple[Any, ...], ...] = ()
    plans: tuple[tuple[Any, ...], ...] = ()
    claim: Claim | None = None
    on_commit: OnCommit | None = None
    chunks: tuple[tuple[Any, ...], ...] = ()
    envelope_add: tuple[tuple[Any, ...], ...] = ()  # plan id, step id, payload, event id
    envelope_pop: tuple[tuple[str, int], ...] = ()
    envelope_clear: tuple[tuple[str, int], ...] = ()
    records_delete: tuple[tuple[str, str, str], ...] = ()  # class, id, owner id
    hooks: HookCalls | None = None  # execution-plan hooks to run once this is committed
    posts: tuple[tuple[str, dict[str, Any]], ...] = ()  # requests for other worlds: inbox, data


@dataclass(slots=True)
class Flush:
    """Tell the persistence actor to commit what it has gathered."""


@dataclass(slots=True)
class PhaseDone:
    """A step's user code returned (sent by the worker to the step actor)."""

    outcome: PhaseOutcome


@dataclass(slots=True)
class StepOutcome:
    """A step's user code returned: the supervisor records and commits the outcome."""

    step_id: int
    outcome: PhaseOutcome


@dataclass(slots=True)
class ExecutePlan:
    """Ask the executor to run a plan (the object if at hand, else loaded by id).

    ``stored`` is set for a plan just planned and not yet stored: the executor stores it
    (already running) in the same transaction that starts it, then resolves ``stored``.
    """

    plan_id: str
    plan: ExecutionPlan | None
    future: Any
    stored: Any = None
    mode: str = "execute"  # or "resume" (a person asked), "continue" (after a stop, a crash)
    note: dict[str, Any] | None = None  # details of a resume's history entry


@dataclass(slots=True)
class PlanDone:
    """A supervisor finished its plan (paused or stopped), or could not start it.

    ``reclaim``: a commit failed; the stored plan is to be recovered and run again.
    """

    plan_id: str
    plan: ExecutionPlan | None
    error: BaseException | None = None
    reclaim: bool = False


@dataclass(slots=True)
class Terminate:
    """Stop taking work; pause running plans once their running steps return."""

    future: Any


@dataclass(slots=True)
class Abandon:
    """Persistence is gone for good: fail every caller waiting for a plan, stop driving
    plans (what is stored stays as it is, for the next start to recover)."""

    error: BaseException


@dataclass(slots=True)
class Wind:
    """Tell a supervisor to start no new step and pause once its running steps return."""


@dataclass(slots=True)
class Event:
    """An event for a step actor; ``persisted`` when it is stored as an envelope.

    ``held``: accepted for a parked step but not stored yet; its envelope goes into the
    commit that moves the step back to ``running`` if the step takes it at once (see
    `HeldEvent`), else the step answers `StoreHeld`.
    """

    payload: Any
    persisted: bool = False
    token: int | None = None  # a wait_for_event timeout: stale once that wait is over
    held: bool = False


@dataclass(slots=True)
class Parked:
    """The step's move to ``suspended`` is committed: it may take events now."""


@dataclass(slots=True)
class Resume:
    """A parked step has an event: commit its move to ``running`` (and drop the envelope).

    ``held``: the event is the one its supervisor holds unstored for it.
    """

    step_id: int
    persisted: bool
    held: bool = False


@dataclass(slots=True)
class StoreHeld:
    """A step cannot take the held event at once (it runs, or has others queued): store it."""

    step_id: int


@dataclass(slots=True)
class GoAhead:
    """The step's move back to ``running`` is committed: run it with its event."""


@dataclass(slots=True)
class AwaitEvent:
    """An async run awaits ``wait_for_event``: park the step, then resolve ``future``."""

    future: Any
    outcome: PhaseOutcome
    timeout: float | None


@dataclass(slots=True)
class DeliverEvent:
    """Deliver ``payload`` to a step of a running plan; answer through ``reply``."""

    plan_id: str
    step_id: int
    payload: Any
    optional: bool
    reply: Any
    event_id: str | None = None  # chosen by the sender: the same id again is not applied
    note: dict[str, Any] | None = None  # who sent it: an "event" history entry (operators)
    durable: bool = True  # False: an engine wake-up (`Ping`), not stored; lost with the world

    def dead_letter(self) -> None:
        """Answer that the plan is not running here (the caller looks at the store why)."""
        self.reply.set_exception(
            NotRunningHere(f"execution plan {self.plan_id} is not running here")
        )


@dataclass(slots=True)
class CancelPlan:
    """Send ``Cancel`` (or ``Abort`` when ``force``) to every cancellable step."""

    plan_id: str
    force: bool
    reply: Any
    note: dict[str, Any] | None = None  # who asked, for the plan's history

    def dead_letter(self) -> None:
        """Answer that no step could be asked: the plan is not running here."""
        self.reply.set_result(0)


@dataclass(slots=True)
class HaltPlan:
    """Stop a running plan: start nothing new, stop once the running calls return."""

    plan_id: str
    reply: Any
    note: dict[str, Any] | None = None  # who asked, for the plan's history

    def dead_letter(self) -> None:
        """Answer that the plan is not running here (the caller stops it where it stands)."""
        self.reply.set_result(False)
