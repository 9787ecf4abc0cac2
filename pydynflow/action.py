"""`Action`: the building block users subclass, with its plan, run and finalize phases.

An action gets a run step only if its class defines ``run`` and a finalize step only if it
defines ``finalize``. Planning methods (`Action.plan_self`, `Action.plan_action`,
`Action.sequence`, `Action.concurrence`) work only inside ``plan()``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from pydynflow.delayed import ArgsSerializer
from pydynflow.errors import DynflowError, PlanningError, SerializationError, UnknownAction
from pydynflow.events import Timeout
from pydynflow.middleware import check_action_class
from pydynflow.references import OutputReference
from pydynflow.registry import class_name, lookup, register
from pydynflow.rescue import Pause, RescuePolicy
from pydynflow.serialization import copy_plain, normalize

if TYPE_CHECKING:
    from pydynflow.middleware import Spec, Stack
    from pydynflow.plan import ActionRecord, StepError
    from pydynflow.planning import Planner

PLAN, RUN, FINALIZE, PRESENT = "plan", "run", "finalize", "present"


class Suspend(BaseException):  # noqa: N818 - control flow, not an error
    """Raised by `Action.suspend` to park the step; the engine catches it.

    A `BaseException` so that user code's ``except Exception`` does not swallow it.
    """

    def __init__(self, callback: Callable[[SuspendedRef], Any] | None = None) -> None:
        super().__init__("suspended")
        self.callback = callback


class SuspendedRef:
    """The address of a suspended (or running) step: ``send(payload)`` delivers an event."""

    __slots__ = ("execution_plan_id", "step_id", "world")

    def __init__(self, world: Any, execution_plan_id: str, step_id: int) -> None:
        self.world = world
        self.execution_plan_id = execution_plan_id
        self.step_id = step_id

    def send(self, payload: Any, optional: bool = False) -> None:
        """Send ``payload`` to the step (see `World.event`)."""
        if self.world is None:
            raise DynflowError("this step reference has no world to send events through")
        self.world.event(self.execution_plan_id, self.step_id, payload, optional=optional)

    def __repr__(self) -> str:
        return f"SuspendedRef({self.execution_plan_id!r}, {self.step_id})"


class ReadOnlyDict(dict):  # type: ignore[type-arg]
    """A dict that refuses changes: an action's input once planning is over."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an action's input is read-only after the plan phase")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling a dict subclass replays __setitem__, which this class refuses: rebuild
        # from a plain dict instead (steps travel to worker processes pickled).
        return (ReadOnlyDict, (dict(self),))


_NO_INPUT = ReadOnlyDict()  # read-only, so one serves every action with an empty input


class Action:
    """Base class of every action; subclass it and define ``plan``, ``run``, ``finalize``.

    Class attributes configure the action: ``label``, ``subscribe`` (plan me whenever one of
    these classes is planned), ``rescue`` (a `RescuePolicy`), ``queue``, ``middleware``
    (middleware classes, `Use` and `DoNotUse` entries; a subclass's list extends its
    bases'), ``run_progress_weight`` and ``finalize_progress_weight``.
    """

    label: ClassVar[str | None] = None
    subscribe: ClassVar[type[Action] | list[type[Action]] | None] = None
    rescue: ClassVar[RescuePolicy] = Pause
    queue: ClassVar[str] = "default"
    middleware: ClassVar[Sequence[Spec]] = ()
    run_progress_weight: ClassVar[int] = 1
    finalize_progress_weight: ClassVar[int] = 1

    # Per-action state. The defaults live on the class so that an action only carries what
    # was set on it: every suspended async run keeps its action object alive.
    trigger: Action | None = None
    error: StepError | None = None
    world: Any = None  # the world running this action (run and finalize phases)
    plan_step_id: int | None = None
    run_step_id: int | None = None
    finalize_step_id: int | None = None
    caller_execution_plan_id: str | None = None
    caller_action_id: int | None = None
    _planner: Planner | None = None
    _middleware: Stack | None = None  # set by the engine when middleware wraps run/finalize
    _from_subscription: bool = False
    _planned_events: list[tuple[Any, float | None]] | tuple[()] = ()  # plan_event() calls
    _chunks: list[tuple[Any, str | None, datetime]] | tuple[()] = ()  # output_chunk() calls
    # Set by the runtime for an async run: ``channel(action, timeout)`` parks the step and
    # returns an awaitable of the next event (see `wait_for_event`).
    _event_channel: Callable[[Action, float | None], Awaitable[Any]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_placeholder", False):
            check_action_class(cls)
            register(cls)

    def __init__(
        self,
        *,
        id: int = 1,
        execution_plan_id: str = "",
        input: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        phase: str = PRESENT,
        trigger: Action | None = None,
        error: StepError | None = None,
    ) -> None:
        self.id = id
        self.execution_plan_id = execution_plan_id
        self._phase = phase
        if phase != PLAN:
            self._input: dict[str, Any] = ReadOnlyDict(copy_plain(input)) if input else _NO_INPUT
        else:
            self._input = dict(input) if input else {}
        # Copies that share no list or dict with the record (`copy_plain`): a change made in
        # place must show as a change, or it would never be stored.
        self._output: dict[str, Any] = copy_plain(output) if output else {}
        if trigger is not None:
            self.trigger = trigger
        if error is not None:
            self.error = error

    # -- class-level facts -------------------------------------------------------------

    @classmethod
    def has_run(cls) -> bool:
        """Return whether the class defines a run phase."""
        return callable(getattr(cls, "run", None))

    @classmethod
    def has_finalize(cls) -> bool:
        """Return whether the class defines a finalize phase."""
        return callable(getattr(cls, "finalize", None))

    @classmethod
    def class_name(cls) -> str:
        """Return the name this class is stored under: ``"module.QualName"``."""
        return class_name(cls)

    @classmethod
    def from_record(cls, record: ActionRecord, phase: str = PRESENT) -> Action:
        """Rebuild an action of this class from its stored record."""
        action = cls(
            id=record.id,
            execution_plan_id=record.execution_plan_id,
            input=record.input,
            output=record.output,
            phase=phase,
        )
        action.plan_step_id = record.plan_step_id
        action.run_step_id = record.run_step_id
        action.finalize_step_id = record.finalize_step_id
        action.caller_execution_plan_id = record.caller_execution_plan_id
        action.caller_action_id = record.caller_action_id
        return action

    def renewed(self, phase: str) -> Action:
        """Return a fresh action object for ``phase`` with this one's ids, input and output.

        The engine builds one per call of a phase (e.g. each ``run(event)`` after a
        suspend), so nothing but the stored data carries over.
        """
        fresh = type(self)(
            id=self.id,
            execution_plan_id=self.execution_plan_id,
            input=dict(self.input),
            output=dict(self._output),
            phase=phase,
        )
        fresh.plan_step_id = self.plan_step_id
        fresh.run_step_id = self.run_step_id
        fresh.finalize_step_id = self.finalize_step_id
        fresh.caller_execution_plan_id = self.caller_execution_plan_id
        fresh.caller_action_id = self.caller_action_id
        fresh.world = self.world
        fresh.error = self.error
        if self._middleware is not None:
            fresh._middleware = self._middleware
        return fresh

    # -- data ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """Return the phase this action object is in: plan, run, finalize or present."""
        return self._phase

    @property
    def input(self) -> dict[str, Any]:
        """Return the input: writable in ``plan()``, read-only afterwards."""
        return self._input

    @input.setter
    def input(self, value: dict[str, Any]) -> None:
        if self._phase != PRESENT:  # a present hook may replace what a reader sees
            self._require_phase(PLAN, "input can only be set")
        self._input = dict(value)

    @property
    def output(self) -> Any:
        """Return the output; during planning, an `OutputReference` to it."""
        if self._phase == PLAN:
            if self.run_step_id is None:
                raise PlanningError(
                    f"{self.class_name()}: plan_self has to be invoked (and the class has to "
                    "define run) before its output can be referenced"
                )
            return OutputReference(self.execution_plan_id, self.run_step_id, self.id)
        return self._output

    @output.setter
    def output(self, value: dict[str, Any]) -> None:
        if self._phase == PLAN:
            raise PlanningError(f"{self.class_name()}: output cannot be set while planning")
        self._output = dict(value)

    @property
    def from_subscription(self) -> bool:
        """Return whether this action was planned through a subscription."""
        return self._from_subscription

    # -- planning ------------------------------------------------------------------------

    def plan(self, *args: Any, **kwargs: Any) -> None:
        """Plan this action; by default ``plan_self`` with the given dict and/or keywords.

        A subscribed action's default plan takes the triggering action's input.
        """
        if self._from_subscription and self.trigger is not None:
            self.plan_self({**self.input, **self.trigger.input})
            return
        if len(args) > 1 or (args and not isinstance(args[0], dict)):
            raise PlanningError(
                f"{self.class_name()}: the default plan() takes one dict and/or keyword "
                f"arguments, got {args!r}; define plan() to accept other arguments"
            )
        self.plan_self(args[0] if args else None, **kwargs)

    def plan_self(self, input: dict[str, Any] | None = None, **fields: Any) -> Action:
        """Merge ``input`` and ``fields`` into the input and add this action's own steps."""
        planner = self._planner
        if planner is None or self._phase != PLAN:  # `_require_planner`, inline: per action
            planner = self._require_planner("plan_self")
        self._input.update(input or {})
        self._input.update(fields)
        planner.add_own_steps(self)
        return self

    def plan_action(self, action_class: type[Action], *args: Any, **kwargs: Any) -> Action:
        """Plan ``action_class`` as a child of this action (depth-first) and return it."""
        planner = self._planner
        if planner is None or self._phase != PLAN:  # `_require_planner`, inline: per action
            planner = self._require_planner("plan_action")
        return planner.plan_child(self, action_class, args, kwargs)

    @contextmanager
    def sequence(self) -> Iterator[None]:
        """Make the steps planned inside the block run one after another."""
        planner = self._require_planner("sequence")
        with planner.sequence():
            yield

    @contextmanager
    def concurrence(self) -> Iterator[None]:
        """Make the steps planned inside the block free to run at the same time."""
        planner = self._require_planner("concurrence")
        with planner.concurrence():
            yield

    def delay(self, options: dict[str, Any], *args: Any, **kwargs: Any) -> ArgsSerializer:
        """Return how the arguments of a delayed plan of this action are stored until it is
        planned (`World.delay`): by default as they are, as JSON.

        Override it to return an `ArgsSerializer` subclass for arguments JSON cannot hold.
        It runs inside the ``delay`` middleware, in the process that delays the plan;
        ``options`` are the delay's (``start_at``, ``start_before``, ``frozen``).
        """
        return ArgsSerializer(args, kwargs)

    def rescue_for_planned(self, action: Action) -> RescuePolicy | None:
        """Return a policy overriding that of ``action``, planned by this one (or None)."""
        return None

    # -- run phase -----------------------------------------------------------------------

    def suspend(self, callback: Callable[[SuspendedRef], Any] | None = None) -> NoReturn:
        """Park this step until an event arrives; ``run(event)`` is called again with it.

        ``output`` is stored first. ``callback(self.suspended_ref)`` runs right after the
        step is parked (e.g. to register the reference with an external system); an event
        sent before the step is parked, even from the callback, is queued, never lost.
        """
        self._require_phase(RUN, "suspend() can only be called")
        raise Suspend(callback)

    @property
    def suspended_ref(self) -> SuspendedRef:
        """Return the address of this step: ``ref.send(payload)`` delivers an event to it."""
        if self.run_step_id is None:
            raise PlanningError(f"{self.class_name()} has no run step to address events to")
        return SuspendedRef(self.world, self.execution_plan_id, self.run_step_id)

    def plan_event(self, event: Any, delay: float | None = None) -> None:
        """Deliver ``event`` to this step after ``delay`` seconds (or once it is parked)."""
        self._require_phase(RUN, "plan_event() can only be called")
        if delay is not None and delay < 0:
            raise ValueError(f"plan_event delay must be >= 0 seconds, got {delay!r}")
        if not isinstance(self._planned_events, list):
            self._planned_events = []
        self._planned_events.append((event, delay))

    def schedule_timeout(self, seconds: float) -> None:
        """Deliver a `Timeout` event after ``seconds``; it calls `process_timeout`."""
        self.plan_event(Timeout(), seconds)

    def process_timeout(self) -> None:
        """Handle a `Timeout` event (instead of ``run``); by default fail the step."""
        raise TimeoutError("Timeout exceeded.")

    async def wait_for_event(self, timeout: float | None = None) -> Any:
        """In an ``async def run``: park the step until an event arrives and return it.

        The step holds no thread while it waits. ``output`` is stored before it parks: a
        restarted process runs ``run`` again from the top, so record there what must not
        happen twice. Raises `TimeoutError` when ``timeout`` seconds pass first.
        """
        channel = self._event_channel
        if channel is None:
            raise DynflowError(
                f"{self.class_name()}: wait_for_event() needs an async run on a world"
            )
        return await channel(self, timeout)

    def output_chunk(self, chunk: Any, kind: str | None = None) -> None:
        """Append ``chunk`` to this action's streaming output (stored with the step).

        Args:
            chunk: JSON-compatible data, stored as its plain JSON form (like ``output``).
            kind: a free label such as ``"stdout"``, or None.

        Raises:
            SerializationError: ``chunk`` is not JSON-compatible, or ``kind`` not a str.
        """
        chunk = normalize(chunk, owner=type(self), field="output chunk")
        if kind is not None:
            if not isinstance(kind, str):
                raise SerializationError(
                    f"{self.class_name()}: output chunk kind: {kind!r} is not a str"
                )
            kind = str.__str__(kind)  # a str enum's value: the writer cannot load its class
        if not isinstance(self._chunks, list):
            self._chunks = []
        self._chunks.append((chunk, kind, datetime.now(UTC)))

    # -- presentation --------------------------------------------------------------------

    def run_progress(self) -> float:
        """Return how far the run phase is (0..1); called after each run call."""
        return 0.5

    def finalize_progress(self) -> float:
        """Return how far the finalize phase is (0..1)."""
        return 0.5

    def humanized_name(self) -> str:
        """Return a name for people: the label, or the class name."""
        return type(self).label or type(self).__name__

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} phase={self._phase}>"

    # -- internals -----------------------------------------------------------------------

    def _require_phase(self, phase: str, what: str) -> None:
        if self._phase != phase:
            raise PlanningError(
                f"{self.class_name()}: {what} in the {phase} phase, not in {self._phase}"
            )

    def _require_planner(self, method: str) -> Planner:
        if self._phase != PLAN or self._planner is None:
            raise PlanningError(f"{self.class_name()}: {method}() can only be called inside plan()")
        return self._planner


class MissingAction(Action):
    """Placeholder for a stored action class that no longer resolves.

    Every phase fails with "action class <name> not found"; this can happen when a class
    was renamed or removed, or the executor was not restarted after adding it.
    """

    _placeholder: ClassVar[bool] = True
    missing_class_name: ClassVar[str] = ""

    def _fail(self, phase: str) -> Any:
        raise UnknownAction(
            f"action class {self.missing_class_name} not found, so its {phase} phase failed; "
            "this happens when an action class is renamed or removed, or the executor was "
            "not restarted after it was added"
        )

    def plan(self, *args: Any, **kwargs: Any) -> None:
        """Fail: the class is missing."""
        self._fail("plan")

    def run(self, event: Any = None) -> None:
        """Fail: the class is missing."""
        self._fail("run")

    def finalize(self) -> None:
        """Fail: the class is missing."""
        self._fail("finalize")


def missing_action_class(name: str) -> type[Action]:
    """Return a placeholder class named after the stored ``name`` (never registered)."""
    module, _, qualname = name.rpartition(".")
    attributes = {
        "__module__": module or "pydynflow.missing",
        "__qualname__": qualname,
        "_placeholder": True,
        "missing_class_name": name,
    }
    return type(qualname.rpartition(".")[2] or name, (MissingAction,), attributes)


_accepts_event: dict[type, bool] = {}
_async_run: dict[type, bool] = {}


def run_accepts_event(action_class: type[Action]) -> bool:
    """Return whether ``run`` takes an event argument (``run(self, event=None)``).

    Only such a run gets events, the engine's `Skip` included (Dynflow's rule).
    """
    found = _accepts_event.get(action_class)
    if found is None:
        run = action_class.run  # type: ignore[attr-defined]
        parameters = list(inspect.signature(run).parameters.values())[1:]
        found = _accepts_event[action_class] = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            for p in parameters
        )
    return found


def runs_in_world(action_class: type[Action]) -> bool:
    """Return whether ``action_class``'s run step needs the world that runs it (it triggers
    sub-plans through it): with ``executor="processes"`` it runs on a thread of the world's
    process instead of a worker process (a `WithSubPlans` sets ``_runs_in_world``)."""
    return bool(getattr(action_class, "_runs_in_world", False))


def is_async_run(action_class: type[Action]) -> bool:
    """Return whether ``action_class.run`` is an ``async def``."""
    found = _async_run.get(action_class)
    if found is None:
        run = getattr(action_class, "run", None)
        found = _async_run[action_class] = inspect.iscoroutinefunction(run)
    return found


_placeholders: dict[str, type[Action]] = {}
_placeholders_lock = threading.Lock()


def resolve_action_class(name: str) -> type[Action]:
    """Return the class registered as ``name``, or a placeholder that fails every phase."""
    found = lookup(name)
    if found is not None:
        return found
    with _placeholders_lock:
        placeholder = _placeholders.get(name)
        if placeholder is None:
            placeholder = _placeholders[name] = missing_action_class(name)
        return placeholder
