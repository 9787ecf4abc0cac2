"""`OperationsMixin`: what an operator (or code) does to a plan that runs: `skip`, `event`,
`cancel` and `halt`, applied by the executor world that runs the plan, reached through the
database from any other world; each operator call notes who asked in the plan's history."""

from __future__ import annotations

import getpass
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

from pydynflow.actors.messages import CancelPlan, Claim, DeliverEvent, HaltPlan, NotRunningHere
from pydynflow.actors.persistence import ClaimRefused
from pydynflow.adapters import telemetry
from pydynflow.errors import DynflowError, EventRejected, UnknownPlan, UnknownStep
from pydynflow.events import EngineEvent, encode_event
from pydynflow.promise import Promise
from pydynflow.serialization import normalize
from pydynflow.skipping import skip_plan_steps
from pydynflow.states import Phase, PlanState, StepState
from pydynflow.storage.requests import world_inbox

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pydynflow.actors.runtime import Runtime
    from pydynflow.dispatch import DispatchThread, RequestClient
    from pydynflow.plan import ActionRecord, ExecutionPlan, Step
    from pydynflow.storage import Storage

__all__ = ["OperationsMixin", "normalize_event"]


class OperationsMixin:
    """`skip`, `event`, `cancel` and `halt` of a `World` (see the module)."""

    # What it uses of `World` (set by `World.__init__`).
    id: str
    name: str
    executor: bool | str
    storage: Storage
    log: Any
    _lock: threading.Lock
    _runtime: Runtime | None
    _client: RequestClient
    _dispatch: DispatchThread | None

    if TYPE_CHECKING:

        def _save(
            self,
            plan: ExecutionPlan,
            *,
            new: bool = False,
            steps: Iterable[Step] = (),
            actions: Iterable[ActionRecord] = (),
            posts: tuple[tuple[str, dict[str, Any]], ...] = (),
            claim: Claim | None = None,
        ) -> None: ...
        def _cancel_scheduled(self, plan_id: str, note: dict[str, Any] | None) -> bool: ...
        def _halt_scheduled(self, plan_id: str, note: dict[str, Any] | None) -> bool: ...

        def _require_executor(self, what: str) -> Any: ...
        def _require_remote(self, what: str, *, live_executor: bool = True) -> None: ...
        def _inbox_of(self, plan_id: str) -> str: ...
        def _other_owner(self, plan_id: str) -> str | None: ...
        def _keep_for_later(
            self, plan_id: str, step_id: int, payload: Any, event_id: str | None
        ) -> bool: ...
        def _stored(self, plan_id: str) -> ExecutionPlan: ...

    def _operator(self, call: str, by: str | None = None) -> dict[str, Any]:
        """Return who asked for an operator action, for the plan's history."""
        user = by if by is not None else _user()
        return {"call": call, "world": self.name, "host": socket.gethostname(), "user": user}

    def skip(self, plan_id: str, step_id: int, *, by: str | None = None) -> None:
        """Mark a failed run step of a paused plan skipped; `resume` the plan to go on.

        The step, every step whose input references it (transitively) and their actions'
        finalize steps are marked skipped; the plan stays ``paused`` until `resume` runs it
        again, without them, and its result will be ``warning``. ``by``: who asked, for the
        plan's history (default: this process's operating-system user).
        """
        note = self._operator("skip", by)
        if not self.executor and self._dispatch is not None:  # through the executor world
            self._require_remote("skip")
            self._client.call("skip", plan_id=plan_id, step_id=step_id, note=note)
            return
        self._skip(plan_id, step_id, note)

    def _skip(self, plan_id: str, step_id: int, note: dict[str, Any] | None) -> None:
        plan = self._stored(plan_id)
        if plan.state != PlanState.PAUSED:
            raise DynflowError(f"execution plan {plan_id} has to be paused to skip a step")
        step = plan.steps.get(step_id)
        if step is None:
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")
        if step.state != StepState.ERROR or step.phase != Phase.RUN:
            raise DynflowError(f"step {step_id} has to be a failed run step to be skipped")
        changed = skip_plan_steps(plan, step)
        plan.note("skip", self.id, {**(note or {}), "step_id": step_id})
        paused = PlanState.PAUSED.value
        try:
            # Written only if the plan is still stored paused: one resumed or deleted since
            # it was read here is not written over (nor brought back, half, if deleted).
            self._save(plan, steps=changed, claim=Claim(plan_id, (paused,), paused))
        except ClaimRefused:
            raise DynflowError(
                f"execution plan {plan_id} changed while its step was being skipped (it is "
                "no longer paused, or was deleted): nothing was skipped"
            ) from None

    def event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        optional: bool = False,
        event_id: str | None = None,
        *,
        by: str | None = None,
    ) -> bool:
        """Send ``payload`` to a step waiting for events (suspended, or running: queued).

        Returns once the event is stored (a crash cannot lose it): True if accepted.
        ``event_id``: an id the sender chooses (a web hook's delivery id, say); the same id
        again for the same step returns True and is not applied again, even once the step
        has ended. ``by``: the operator who sends it (the CLI's ``--by``): the running plan's
        history then gets an "event" entry naming them, this world and host (events from
        code, without ``by``, add none: they are the plan's normal traffic).

        Raises:
            UnknownPlan: no plan has this id.
            UnknownStep: the plan has no step with this id.
            EventRejected: the step is not waiting for events (with ``optional``: return
                False instead).
            SerializationError: ``payload`` is not JSON-serialisable.
        """
        if event_id is not None and not isinstance(event_id, str):
            raise TypeError(f"event_id must be a str, got {type(event_id).__name__}")
        payload = normalize_event(payload)
        note = None if by is None else self._operator("event", by)
        return self._event(plan_id, step_id, payload, optional, event_id, forward=True, note=note)

    def _wake_step(self, plan_id: str, step_id: int, payload: Any) -> bool:
        """Wake a step with an engine event that need not be stored (a sub-plan's `Ping`):
        to the step at once if its plan runs here, else as an optional `event` (through
        the database to the world running it). Return whether the step took it."""
        if self.executor and self._runtime is not None:
            executor = self._require_executor("wake")
            reply: Promise[bool] = Promise()
            executor.tell(DeliverEvent(plan_id, step_id, payload, True, reply, durable=False))
            try:
                return reply.result()
            except NotRunningHere:
                pass  # it runs elsewhere, or nowhere: the stored way
        return self.event(plan_id, step_id, payload, optional=True)

    def _event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        optional: bool,
        event_id: str | None = None,
        *,
        forward: bool,
        note: dict[str, Any] | None = None,
    ) -> bool:
        """`event`; ``forward``: to the world running the plan if it is another one (not
        when applying another world's request: that would wait on this world's own
        dispatch thread)."""
        if not self.executor:
            self._require_remote("event")
            self._check_step(plan_id, step_id)
            accepted = self._client.call(
                "event",
                inbox=self._inbox_of(plan_id),
                plan_id=plan_id,
                step_id=step_id,
                payload=encode_event(payload),
                optional=optional,
                event_id=event_id or _request_event_id(),
                note=note,
            )
            return bool(accepted)
        executor = self._require_executor("event")
        reply: Promise[bool] = Promise()
        executor.tell(DeliverEvent(plan_id, step_id, payload, optional, reply, event_id, note))
        try:
            return reply.result()
        except NotRunningHere:  # only now ask the store why (not on every event)
            self._check_step(plan_id, step_id)
            owner = self._other_owner(plan_id) if forward else None
            if owner is not None:
                return bool(
                    self._client.call(
                        "event",
                        inbox=world_inbox(owner),
                        plan_id=plan_id,
                        step_id=step_id,
                        payload=encode_event(payload),
                        optional=optional,
                        event_id=event_id or _request_event_id(),
                        note=note,
                    )
                )
            if event_id is not None and (step_id, event_id) in self.storage.chosen_event_ids(
                plan_id
            ):
                return True  # applied before
            if self._keep_for_later(plan_id, step_id, payload, event_id):
                return True
            telemetry.current().event_rejected()  # refused here: the plan runs nowhere
            if optional:
                return False
            state = self.storage.step_state(plan_id, step_id)
            raise EventRejected(
                f"step {step_id} of execution plan {plan_id} is {state}, and the plan is not "
                "running in this world: not waiting for events"
            ) from None

    def cancel(self, plan_id: str, force: bool = False, *, by: str | None = None) -> int:
        """Ask every running or suspended `Cancellable` step of a plan to cancel.

        Sends `Cancel` (``force``: `Abort`); returns how many steps were asked (0: nothing
        could be cancelled). A plan that runs notes who asked in its history (``by``,
        default: this process's operating-system user). A delayed plan not planned yet
        (``scheduled``) is cancelled at once: ``stopped`` with result ``cancelled`` (1).
        """
        note = {**self._operator("cancel", by), "force": force}
        return self._cancel(plan_id, force, note, forward=True)

    def _cancel(
        self, plan_id: str, force: bool, note: dict[str, Any] | None, *, forward: bool
    ) -> int:
        self._check_step(plan_id, None)
        if self._cancel_scheduled(plan_id, note):  # not planned yet: any world stops it
            return 1
        if not self.executor:
            self._require_remote("cancel")
            inbox = self._inbox_of(plan_id)
            asked = self._client.call(
                "cancel", inbox=inbox, plan_id=plan_id, force=force, note=note
            )
            return int(asked)
        executor = self._require_executor("cancel")
        reply: Promise[int] = Promise()
        executor.tell(CancelPlan(plan_id, force, reply, note))
        asked = reply.result()
        owner = self._other_owner(plan_id) if forward and not asked else None
        if owner is not None:
            inbox = world_inbox(owner)
            asked = self._client.call(
                "cancel", inbox=inbox, plan_id=plan_id, force=force, note=note
            )
        return int(asked)

    def halt(self, plan_id: str, *, by: str | None = None) -> None:
        """Stop a plan: running steps finish their current call, suspended steps stay
        suspended, nothing new starts, and the plan ends ``stopped``. Its history notes
        who asked (``by``, default: this process's operating-system user). A delayed plan
        not planned yet stops at once and is never planned."""
        self._halt(plan_id, self._operator("halt", by), forward=True)

    def _halt(self, plan_id: str, note: dict[str, Any] | None, *, forward: bool) -> None:
        self._check_step(plan_id, None)
        if self._halt_scheduled(plan_id, note):  # not planned yet: any world stops it
            return
        if not self.executor:
            self._require_remote("halt")
            inbox = self._inbox_of(plan_id)
            self._client.call("halt", inbox=inbox, plan_id=plan_id, note=note)
            return
        executor = self._require_executor("halt")
        reply: Promise[bool] = Promise()
        executor.tell(HaltPlan(plan_id, reply, note))
        if reply.result():
            return  # its supervisor stops it
        owner = self._other_owner(plan_id) if forward else None
        if owner is not None:
            self._client.call("halt", inbox=world_inbox(owner), plan_id=plan_id, note=note)
            return
        plan = self._stored(plan_id)  # not running here: stop it where it stands
        if plan.state != PlanState.STOPPED:
            if note is not None:
                plan.note("halt", self.id, note)
            plan.transition(PlanState.STOPPED, self.id)
            self._save(plan)

    def _check_step(self, plan_id: str, step_id: int | None) -> None:
        state = self.storage.step_state(plan_id, step_id)
        if state is None:
            if step_id is None or not self.storage.plan_exists(plan_id):
                raise UnknownPlan(f"no execution plan has id {plan_id}")
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")


def _user() -> str:
    """Return the operating-system user of this process (for operator history entries)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _request_event_id() -> str:
    """Return an id for an event sent through the database without one: the request may
    be applied twice (a world killed after applying it, before deleting it), and its
    receiver recognises the id the second time (as it does a sender's own `event_id`)."""
    return "request-" + uuid.uuid4().hex


def normalize_event(payload: Any) -> Any:
    """Return ``payload`` checked for storage: an engine event or JSON-shaped data."""
    if isinstance(payload, EngineEvent):
        return payload
    return normalize(payload, owner="World.event", field="event")
