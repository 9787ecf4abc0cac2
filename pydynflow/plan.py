"""The read side of an execution plan: `ExecutionPlan`, `Step`, `ActionRecord`, `StepError`.

These are plain data: no threads, no SQL. Planning (`pydynflow.planning`) builds them, the
store saves and loads them, the runtime changes their states through the persistence actor.
"""

from __future__ import annotations

import builtins
import functools
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydynflow import errors as _errors
from pydynflow import hooks as _hooks
from pydynflow.action import resolve_action_class
from pydynflow.flows import Concurrence, Flow, Sequence
from pydynflow.rescue import RescuePolicy, plan_rescue_strategy
from pydynflow.states import (
    STEP_TRANSITIONS,
    Phase,
    PlanState,
    Result,
    StepState,
    check_plan_transition,
    check_step_transition,
    compute_result,
)

if TYPE_CHECKING:
    from pydynflow.action import Action
    from pydynflow.delayed import DelayedPlan


utcnow = functools.partial(datetime.now, UTC)
"""Return the current time as an aware UTC datetime (a partial: no Python frame per call,
and the engine takes the time several times per step)."""


def new_plan_id() -> str:
    """Return a new execution plan id: a time-ordered UUID (RFC 9562 version 7).

    Its first 48 bits are the creation time in milliseconds, the other 74 are random. Why
    not version 4: ids made close in time sort close together, so the rows a batch of new
    plans adds to the primary-key indexes of plans, actions and steps share index pages
    instead of landing on one random page each (on SQLite and PostgreSQL alike), and a commit
    writes fewer pages.
    """
    random = _random_bits()
    value = (time.time_ns() // 1_000_000) << 80  # unix_ts_ms
    value |= 0x7 << 76  # version
    value |= ((random >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= random & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


_random_pool: list[int] = []
os.register_at_fork(after_in_child=_random_pool.clear)  # a child must not repeat its parent


def _random_bits() -> int:
    """Return 80 random bits from the OS, drawn 256 ids' worth at a time.

    One ``os.urandom`` call per id would release the GIL on every trigger, and in a busy
    process getting it back can take milliseconds. No lock: ``list.pop`` and ``extend`` are
    atomic, so two threads never get the same bits (at worst both refill).
    """
    try:
        return _random_pool.pop()
    except IndexError:
        block = os.urandom(10 * 256)
        bits = [int.from_bytes(block[i : i + 10], "big") for i in range(0, len(block), 10)]
        value = bits.pop()
        _random_pool.extend(bits)
        return value


@dataclass(frozen=True, slots=True)
class StepError:
    """A failure recorded on a step: data, never a pickled exception."""

    exception_class: str
    message: str
    backtrace: list[str] = field(default_factory=list)

    @classmethod
    def from_exception(cls, exc: BaseException) -> StepError:
        """Record ``exc`` with its class name, message and formatted backtrace."""
        klass = type(exc)
        # A worker process imports the user's script as __mp_main__: it is still __main__.
        module = "__main__" if klass.__module__ == "__mp_main__" else klass.__module__
        name = klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"
        backtrace = [
            line.rstrip("\n")
            for entry in traceback.format_tb(exc.__traceback__)
            for line in entry.splitlines()
        ]
        # __str__ may return a str subclass, whose class the writer process cannot load.
        return cls(name, str.__str__(str(exc)), backtrace)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-compatible form that is stored."""
        return {
            "exception_class": self.exception_class,
            "message": self.message,
            "backtrace": list(self.backtrace),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepError:
        """Rebuild an error from `to_dict` output."""
        return cls(data["exception_class"], data["message"], list(data.get("backtrace") or []))

    def exception(self) -> BaseException:
        """Return an exception object for this error.

        Only builtin exceptions and pydynflow's own are rebuilt; any other class (which may
        have been renamed or removed, and is never imported from stored data) becomes
        `UnknownError` carrying the original name.
        """
        name = self.exception_class
        klass = getattr(builtins, name, None) if "." not in name else None
        if klass is None and name.startswith("pydynflow.errors."):
            klass = getattr(_errors, name.rsplit(".", 1)[1], None)
        if isinstance(klass, type) and issubclass(klass, Exception):
            try:
                return klass(self.message)
            except Exception:  # constructors with other signatures
                pass
        return _errors.UnknownError(name, self.message)

    def __str__(self) -> str:
        return f"{self.exception_class}: {self.message}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a plan's execution history (``"start execution"``, ``"delay"``...).

    ``details`` is None or a JSON-compatible dict: why a plan paused (``{"reason":
    "error"}``), the step and event of an undelivered event, the steps a dead world left.
    """

    time: datetime
    name: str
    world_id: str | None = None
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-compatible form that is stored."""
        data: dict[str, Any] = {
            "time": self.time.isoformat(),
            "name": self.name,
            "world_id": self.world_id,
        }
        if self.details is not None:
            data["details"] = self.details
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryEntry:
        """Rebuild an entry from `to_dict` output."""
        return cls(
            datetime.fromisoformat(data["time"]),
            data["name"],
            data.get("world_id"),
            data.get("details"),
        )


@dataclass(eq=True, slots=True)
class ActionRecord:
    """What is stored about one action of a plan."""

    id: int
    execution_plan_id: str
    action_class_name: str
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    plan_step_id: int | None = None
    run_step_id: int | None = None
    finalize_step_id: int | None = None
    caller_execution_plan_id: str | None = None
    caller_action_id: int | None = None

    @property
    def action_class(self) -> type[Action]:
        """Return the registered class, or a placeholder if it no longer resolves."""
        return resolve_action_class(self.action_class_name)


@dataclass(eq=True, slots=True)
class Step:
    """One phase (plan, run or finalize) of one action."""

    id: int
    execution_plan_id: str
    action_id: int
    action_class_name: str
    phase: Phase
    state: StepState = StepState.PENDING
    error: StepError | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    real_time: float = 0.0
    execution_time: float = 0.0
    progress_done: float = 0.0
    progress_weight: int = 1
    # Times its code was started: its first run, each retry, each resume (a run called with
    # `Skip` to clean up is not an attempt, nor a run(event) after a suspend).
    attempts: int = 0
    retries: int = 0  # `Retry` attempts used since its first run or its last resume
    # A list once the step has children; until then (most steps never do) the shared empty
    # tuple: an empty list per step was a large share of the objects a finished plan keeps
    # alive for the garbage collector to scan.
    children: list[int] | tuple[int, ...] = ()
    queue: str = "default"
    action: ActionRecord | None = field(default=None, compare=False, repr=False)

    @property
    def action_class(self) -> type[Action]:
        """Return the registered class, or a placeholder if it no longer resolves."""
        return resolve_action_class(self.action_class_name)

    @property
    def input(self) -> dict[str, Any]:
        """Return the input of this step's action."""
        return self.action.input if self.action is not None else {}

    @property
    def output(self) -> dict[str, Any]:
        """Return the output of this step's action."""
        return self.action.output if self.action is not None else {}

    def transition(self, new: StepState) -> None:
        """Move to ``new``; raise `InvalidTransition` if this phase's table forbids it."""
        # `check_step_transition`, inline: twice per step run
        if new not in STEP_TRANSITIONS[self.phase].get(self.state, ()):
            check_step_transition(self.phase, self.state, new)  # raises, naming both
        self.state = new if type(new) is StepState else StepState(new)

    def progress(self) -> float:
        """Return how much of this step is done, as Dynflow counts it (0..1)."""
        if self.state in (StepState.SUCCESS, StepState.SKIPPED):
            return 1.0
        if self.state == StepState.PENDING:
            return 0.0
        return self.progress_done


@dataclass(eq=True, slots=True)
class ExecutionPlan:
    """A planned workflow: its steps, actions, flows, state and history."""

    id: str
    label: str | None = None
    state: PlanState = PlanState.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    real_time: float = 0.0
    execution_time: float = 0.0
    root_plan_step_id: int | None = None
    steps: dict[int, Step] = field(default_factory=dict)
    actions: dict[int, ActionRecord] = field(default_factory=dict)
    run_flow: Flow = field(default_factory=Concurrence)
    finalize_flow: Sequence = field(default_factory=Sequence)
    history: list[HistoryEntry] = field(default_factory=list)
    valid: bool = True
    exception: StepError | None = None
    stored_result: Result | None = field(default=None, compare=False, repr=False)
    world: Any = field(default=None, compare=False, repr=False)
    # For execution-plan hooks (`pydynflow.hooks`): the states entered since the plan's last
    # commit, and whether an action of the plan has a hook (None: not known yet).
    hook_states: list[PlanState] | None = field(default=None, compare=False, repr=False)
    has_hooks: bool | None = field(default=None, compare=False, repr=False)

    @property
    def root_plan_step(self) -> Step | None:
        """Return the plan step of the root action."""
        if self.root_plan_step_id is None:
            return None
        return self.steps.get(self.root_plan_step_id)

    @property
    def root_action_id(self) -> int | None:
        """Return the id of the root action: the one the plan was planned for."""
        root = self.root_plan_step
        return None if root is None else root.action_id

    @property
    def queue(self) -> str:
        """Return the queue of the root action's class: only executor worlds that serve it
        execute the plan (``"default"``, which every executor serves, if unknown)."""
        action_id = self.root_action_id
        root = None if action_id is None else self.actions.get(action_id)
        queue = getattr(root.action_class, "queue", None) if root is not None else None
        return queue if isinstance(queue, str) else "default"

    @property
    def caller(self) -> tuple[str, int] | None:
        """Return ``(plan id, action id)`` of the action that triggered this plan as its
        sub-plan (`WithSubPlans`), or None."""
        action_id = self.root_action_id
        root = None if action_id is None else self.actions.get(action_id)
        if root is None or root.caller_execution_plan_id is None:
            return None
        return root.caller_execution_plan_id, int(root.caller_action_id or 0)

    @property
    def result(self) -> Result:
        """Return the result over all steps (the stored one for an invalid plan)."""
        if not self.valid:
            return self.stored_result or Result.ERROR
        return compute_result([step.state for step in self.steps.values()])

    @property
    def rescue_strategy(self) -> RescuePolicy:
        """Return the rescue strategy (`Pause`, `Skip` or `Fail`) for this plan's failures."""
        return plan_rescue_strategy(self)

    @property
    def error(self) -> StepError | None:
        """Return the first error recorded on a step, if any."""
        for step in self.steps.values():
            if step.error is not None:
                return step.error
        return self.exception

    def transition(
        self,
        new: PlanState,
        world_id: str | None = None,
        details: dict[str, Any] | None = None,
        notice: str | None = None,
    ) -> None:
        """Move to ``new`` with Dynflow's side effects on times and history.

        ``details`` go with the history entry the move adds (e.g. why the plan paused);
        ``notice`` names that entry instead of the state's own name (a delayed plan that
        timed out stops with "timeout", not "finish execution").
        """
        old = self.state
        check_plan_transition(old, new)
        now = utcnow()
        self.state = PlanState(new)
        if self.has_hooks or (_hooks.declared and self.has_hooks is not False):
            _hooks.record_transition(self, old, self.state)
        if new == PlanState.PLANNING:
            self.started_at = now
        elif new == PlanState.STOPPED:
            self.ended_at = now
            if self.started_at is not None:
                self.real_time = (now - self.started_at).total_seconds()
            self.execution_time = sum([step.execution_time for step in self.steps.values()])
        if notice is None:
            notice = _HISTORY_NOTICES.get(PlanState(new))
        if notice is not None:
            self.history.append(HistoryEntry(now, notice, world_id, details))

    def note(self, name: str, world_id: str | None, details: dict[str, Any] | None = None) -> None:
        """Add a history entry ``name`` now (an event not delivered, a resume...)."""
        self.history.append(HistoryEntry(utcnow(), name, world_id, details))

    def executing_world_id(self) -> str | None:
        """Return the world that started the plan's current execution (its last "start
        execution" history entry), if any."""
        for entry in reversed(self.history):
            if entry.name == "start execution":
                return entry.world_id
        return None

    def pause_reason(self) -> str | None:
        """Return why the plan last paused (``"error"``, ``"stop"``...), if it says so."""
        for entry in reversed(self.history):
            if entry.name == "pause execution":
                return (entry.details or {}).get("reason")
        return None

    def steps_of_phase(self, phase: Phase) -> list[Step]:
        """Return the steps of one phase, ordered by id."""
        return [step for _, step in sorted(self.steps.items()) if step.phase == phase]

    def progress(self) -> float:
        """Return the weighted progress over run and finalize steps (0..1)."""
        if self.state in (PlanState.PENDING, PlanState.PLANNING, PlanState.SCHEDULED):
            return 0.0
        flow_steps = [s for s in self.steps.values() if s.phase != Phase.PLAN]
        total = sum(step.progress_weight for step in flow_steps)
        if not flow_steps or total == 0:
            return 1.0
        return sum(step.progress() * step.progress_weight for step in flow_steps) / total

    def delayed_plan(self) -> DelayedPlan | None:
        """Return when this plan, delayed (`World.delay`, `World.chain`), may start, and the
        plans it waits for; None once it was planned (or if it never was delayed)."""
        if self.world is None:
            return None
        found: DelayedPlan | None = self.world.storage.delayed_plan(self.id)
        return found

    def sub_plans(self) -> list[ExecutionPlan]:
        """Return the plans whose caller is an action of this plan."""
        if self.world is None:
            return []
        return self.world.storage.find_plans(caller_execution_plan_id=self.id, limit=None)


_HISTORY_NOTICES = {
    PlanState.RUNNING: "start execution",
    PlanState.PAUSED: "pause execution",
    PlanState.STOPPED: "finish execution",
    PlanState.SCHEDULED: "delay",
}
