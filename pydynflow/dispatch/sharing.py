"""`SharingMixin`: what a `World` does with the other worlds of its database: register
and heartbeat (through its dispatch thread), recover and continue the plans of worlds that
died or stopped, hand plans to the executors serving their queue, and route requests to
the world that runs a plan (`pydynflow.dispatch`)."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydynflow.dispatch.client import RequestClient
from pydynflow.dispatch.invalidation import Invalidator
from pydynflow.dispatch.registry import WorldRegistry
from pydynflow.dispatch.server import RequestServer
from pydynflow.dispatch.thread import DispatchThread
from pydynflow.errors import DynflowError, PersistenceError, UnknownPlan
from pydynflow.events import encode_event
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.promise import Promise
from pydynflow.recovery import interrupted, recover_plan
from pydynflow.states import Phase, PlanState, StepState
from pydynflow.storage.database import redact_url
from pydynflow.storage.requests import ANY_EXECUTOR, executor_inbox, reply_inbox, world_inbox
from pydynflow.triggered import Triggered
from pydynflow.world_info import WorldInfo

if TYPE_CHECKING:
    from pydynflow.action import Action
    from pydynflow.actors.runtime import Runtime
    from pydynflow.storage import Storage

__all__ = ["SharingMixin"]


class SharingMixin:
    """The many-processes side of a `World` (see the module)."""

    # What it uses of `World` (set by `World.__init__`).
    id: str
    name: str
    db: str
    executor: bool | str
    auto_execute: bool
    queues: dict[str, int]
    heartbeat: float
    max_recoveries: int
    auto_executed: list[Triggered]
    storage: Storage
    log: Any
    _lock: threading.Lock
    _registry: WorldRegistry
    _client: RequestClient
    _invalidator: Invalidator | None
    _dispatch: DispatchThread | None
    _others_checked: tuple[float, dict[str, bool]]

    if TYPE_CHECKING:

        def _require_runtime(self, what: str) -> Runtime: ...
        def _plan(
            self,
            action_class: type[Action],
            args: Sequence[Any],
            kwargs: dict[str, Any] | None,
            plan_id: str | None = None,
            caller_action: Action | None = None,
        ) -> ExecutionPlan: ...
        def _save(
            self,
            plan: ExecutionPlan,
            *,
            new: bool = False,
            steps: Iterable[Step] = (),
            actions: Iterable[ActionRecord] = (),
            posts: tuple[tuple[str, dict[str, Any]], ...] = (),
        ) -> None: ...
        def _stored(self, plan_id: str) -> ExecutionPlan: ...
        def _execute(
            self,
            plan_id: str,
            plan: ExecutionPlan | None,
            mode: str,
            note: dict[str, Any] | None = None,
            call: str = "execute",
            quiet: bool = False,
            inbox: str | None = None,
            store: Callable[[str, dict[str, Any]], object] | None = None,
        ) -> Triggered: ...
        def _operator(self, call: str, by: str | None = None) -> dict[str, Any]: ...
        def _stop_fatally(self, error: BaseException) -> None: ...
        def _present_shared(self, plan: ExecutionPlan) -> ExecutionPlan: ...
        def load(self, plan_id: str) -> ExecutionPlan: ...
        def stop(self, timeout: float | None = None) -> Any: ...

    def _start_dispatch(self) -> None:
        """Start talking to the other worlds of the database (none share one in memory)."""
        if self.storage.in_memory:
            return
        world: Any = self  # a `World`: the server applies requests with its methods
        server = RequestServer(world, self._tell_plan_done) if self.executor else None
        self._dispatch = DispatchThread(
            self._registry,
            self._client,
            server,
            self._invalidator,
            heartbeat=self.heartbeat,
            on_invalidated=self._invalidated,
            log=self.log,
        )
        self._dispatch.start()

    def _continue_orphan(self, plan_id: str) -> None:
        """Take over a running plan whose world died (`Invalidator`): recover it and, with
        ``auto_execute``, continue it."""
        plan = self._recover_orphan(plan_id)
        if plan is None or not interrupted(plan):
            return
        if plan.queue not in self.queues:
            self._hand_over([plan])  # to the executors that serve its queue
        elif self.auto_execute:
            self._execute(plan.id, plan, "continue")  # not kept: a daemon does this for ever

    def _continue_interrupted(self) -> None:
        """A world left: continue the plans a stop or a crash paused (a world that stopped
        gracefully paused those it ran); a claim decides which executor runs each."""
        if not self.auto_execute:
            return
        for plan in self.storage.find_plans(state="paused", limit=None):
            if plan.valid and interrupted(plan) and plan.queue in self.queues:
                self._execute(plan.id, plan, "continue")

    def _recover_orphan(self, plan_id: str) -> ExecutionPlan | None:
        """Mark the running steps of a plan whose world died "Abnormal termination" and
        store it paused (its policies decide what continuing does); None if unreadable."""
        try:
            plan = self.load(plan_id)
        except PersistenceError as exc:
            self.log.error(
                "cannot recover a plan whose world died", plan_id=plan_id, error=str(exc)
            )
            return None
        if not plan.valid or plan.state != PlanState.RUNNING:
            return None
        steps = recover_plan(plan, self.id, self.max_recoveries)
        self._save(plan, steps=steps)
        self.log.warning(
            "recovered a plan a dead world left running",
            plan_id=plan.id,
            abnormally_terminated=[step.id for step in steps],
        )
        return plan

    def _tell_plan_done(self, sender: str, notice: dict[str, Any]) -> None:
        dispatch = self._dispatch
        if dispatch is not None:
            dispatch.send_later(reply_inbox(sender), notice)

    def _invalidated(self) -> None:
        """This world's record is gone: another world found it dead and invalidated it."""
        if not self.executor:
            self.log.warning("this world's record was removed: registering again")
            self._registry.register()
            return
        self.log.error(
            "this world was invalidated by another world (its heartbeat came too late): "
            "stopping, its plans are recovered elsewhere"
        )
        # Its plans are another world's now: stop without writing a word about them (a
        # graceful stop would store them paused over what their new executor did).
        error = DynflowError(f"{self!r} was invalidated by another world")
        threading.Thread(
            target=self._stop_fatally, args=(error,), name="pydynflow-invalidated"
        ).start()

    def _describe(self) -> dict[str, Any]:
        """Return who this world is, for locks and messages."""
        return {
            "world_id": self.id,
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def _hand_over_paused(self) -> None:
        """Ask any executor world to continue the plans this stop paused (requests that
        stay stored until one reads them; a plan run meanwhile makes them no-ops)."""
        handed = [
            plan
            for plan in self.storage.find_plans(state="paused", limit=None)
            if plan.history
            and plan.history[-1].world_id == self.id
            and plan.pause_reason() == "stop"
        ]
        if handed:
            self._hand_over(handed)
            self.log.info(
                "handed the plans this stop paused to other executors",
                plans=[plan.id for plan in handed],
            )

    def _hand_over(self, plans: Iterable[ExecutionPlan]) -> None:
        """Ask the executors serving each plan's queue to continue it (quiet requests that
        stay stored until one reads them, taken only by worlds with ``auto_execute``)."""
        request = {"kind": "execute", "mode": "continue", "quiet": True}
        self.storage.post_requests(
            (executor_inbox(plan.queue), {**request, "plan_id": plan.id}) for plan in plans
        )

    def _stop_dispatch(self) -> None:
        dispatch, self._dispatch = self._dispatch, None
        if dispatch is not None:
            dispatch.stop()
        self._client.fail_all(DynflowError(f"{self!r} stopped"))

    def _require_remote(self, what: str, *, live_executor: bool = True) -> None:
        """Check that this client world can reach an executor world through the database
        (``live_executor``: one is alive now)."""
        self._require_runtime(what)
        if self._dispatch is None:
            raise DynflowError(
                f"{what} from a client world needs a database other processes share; "
                f"{self!r} is in memory: use an executor world"
            )
        if live_executor and not self._registry.live_executors():
            raise DynflowError(
                f"{what}: no executor world is alive on {redact_url(self.db)}; start one "
                "(World(db) or `pydynflow worker`) and try again"
            )

    def _other_executors(self, queue: str) -> bool:
        """Return whether other executor worlds serving ``queue`` are alive (the registry
        is read at most once a second)."""
        if self._dispatch is None:
            return False
        now = time.monotonic()
        checked, serving = self._others_checked
        if now - checked > 1.0:
            serving = {}
            for info in self._registry.live_executors():
                if info.id != self.id:
                    for served in info.queues:
                        serving[served] = True
            self._others_checked = (now, serving)
        return serving.get(queue, False)

    def _trigger_for_any(
        self,
        action_class: type[Action],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        caller_action: Action,
    ) -> Triggered:
        """Plan a sub-plan here and hand it to whichever executor world takes it first (this
        one included), as Dynflow sends executions to any executor: the sub-plans of one
        parent spread over the executor processes."""
        plan = self._plan(action_class, args, kwargs, caller_action=caller_action)
        if plan.state != PlanState.PLANNED:
            return self._not_planned(plan)
        self._client.post(
            "execute",
            inbox=executor_inbox(plan.queue),
            store=self._with_plan(plan),
            plan_id=plan.id,
            note=None,
            quiet=True,
        )
        return Triggered(plan.id, functools.partial(self._client.wait_plan, plan.id))

    def _not_planned(self, plan: ExecutionPlan) -> Triggered:
        """Store a plan whose planning failed; return its `Triggered`, already over."""
        self._save(plan, new=True, steps=plan.steps.values(), actions=plan.actions.values())
        future: Promise[ExecutionPlan] = Promise()
        future.set_result(plan)
        return Triggered(
            plan.id, future, planned=False, error=plan.error, present=self._present_shared
        )

    def _with_plan(self, plan: ExecutionPlan) -> Callable[[str, dict[str, Any]], None]:
        """Return how a request naming a fresh plan is stored: in one transaction with the
        plan, so that a world dying in between leaves neither a plan no executor hears of
        nor a request for a plan that does not exist."""

        def store(inbox: str, request: dict[str, Any]) -> None:
            self._save(
                plan,
                new=True,
                steps=plan.steps.values(),
                actions=plan.actions.values(),
                posts=((inbox, request),),
            )

        return store

    def _trigger_elsewhere(
        self,
        action_class: type[Action],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        caller_action: Action | None = None,
    ) -> Triggered:
        """Plan here, store the plan, and have an executor world execute it; with none
        alive, the plan waits ``planned`` (the request stays stored for the next one)."""
        self._require_remote("trigger", live_executor=False)
        plan = self._plan(action_class, args, kwargs, caller_action=caller_action)
        if plan.state != PlanState.PLANNED:
            return self._not_planned(plan)
        note = self._operator("trigger")
        queue = plan.queue
        inbox = executor_inbox(queue)
        # Quiet: an executor that starts now may run the plan first (auto_execute); that
        # the request then finds it running or done is no error for this caller.
        store = self._with_plan(plan)
        if any(queue in info.queues for info in self._registry.live_executors()):
            return self._execute(
                plan.id, None, "resume", note, call="execute", quiet=True, inbox=inbox, store=store
            )
        self.log.warning(
            "no executor world serving the plan's queue is alive: the plan waits planned",
            plan_id=plan.id,
            queue=queue,
        )
        future = self._client.wait_plan(plan.id)
        try:
            self._client.post(
                "execute", inbox=inbox, store=store, plan_id=plan.id, note=note, quiet=True
            )
        except BaseException as exc:
            self._client.fail_wait(plan.id, future, exc)
            raise
        return Triggered(plan.id, future)

    def _keep_for_later(
        self, plan_id: str, step_id: int, payload: Any, event_id: str | None
    ) -> bool:
        """Store an event for a run step of a plan that runs nowhere (``planned``, or
        ``paused``) and can still take it; its next execution delivers it. Return whether
        it was stored."""
        try:
            plan = self._stored(plan_id)
        except UnknownPlan:
            return False
        step = plan.steps.get(step_id)
        if step is None or step.phase != Phase.RUN or step.state not in _KEEPS_EVENTS:
            return False
        chosen = event_id is not None
        stored_id = event_id if event_id is not None else uuid.uuid4().hex
        return self.storage.keep_event(plan_id, step_id, encode_event(payload), stored_id, chosen)

    def _other_owner(self, plan_id: str) -> str | None:
        """Return the other registered world running ``plan_id``, if any (and this world
        can reach it: not in memory)."""
        if self._dispatch is None:
            return None
        owner = self.storage.executing_world(plan_id)
        if owner is None or owner == self.id:
            return None
        registered = {record["id"] for record in self.storage.world_records()}
        return owner if owner in registered else None

    def _execution_inbox(self, plan_id: str) -> str:
        """Return where executing ``plan_id`` is asked for: the world running it, or the
        executors serving its queue."""
        owner = self._other_owner(plan_id)
        if owner is not None:
            return world_inbox(owner)
        try:
            return executor_inbox(self.storage.load_plan(plan_id).queue)
        except UnknownPlan:
            return ANY_EXECUTOR  # the executor's reply says it is unknown

    def _inbox_of(self, plan_id: str) -> str:
        """Return where a request about ``plan_id`` goes: the world running it, or any
        executor."""
        owner = self._other_owner(plan_id)
        return world_inbox(owner) if owner is not None else ANY_EXECUTOR

    def _recover(self, invalidator: Invalidator) -> None:
        """Recover what dead worlds left; continue what a stop or a crash interrupted.

        Runs once, when an executor world starts, after the dead worlds were invalidated:
        the running plans of worlds without a record are recovered (one live world takes
        each), then with ``auto_execute`` planned plans and interrupted paused ones are
        executed (a claim decides which executor runs each) if their queue is one this
        world serves; interrupted ones of other queues are handed to the executors serving
        them. Plans paused for a person are listed in one log line.
        """
        invalidator.recover_orphans(self._recover_orphan)
        waiting: list[str] = []
        elsewhere: list[ExecutionPlan] = []  # interrupted, in a queue this world does not serve
        for plan in self.storage.find_plans(state=["planned", "paused"], limit=None):
            if not plan.valid:
                waiting.append(plan.id)
            elif plan.queue not in self.queues:
                if plan.state == PlanState.PAUSED and interrupted(plan):
                    elsewhere.append(plan)
            elif plan.state == PlanState.PLANNED or interrupted(plan):
                if self.auto_execute:
                    self.auto_executed.append(self._execute(plan.id, plan, "continue"))
            else:
                waiting.append(plan.id)
        if elsewhere:
            self._hand_over(elsewhere)
        if waiting:
            self.log.warning(
                "plans paused for a person (resume or skip them)",
                count=len(waiting),
                plan_ids=waiting,
            )

    def worlds(self) -> list[WorldInfo]:
        """List the worlds registered in the database (this one too), oldest first.

        ``alive`` says whether a world's last heartbeat is younger than this world's
        ``validity_timeout``.
        """
        return self._registry.worlds()

    def invalidate(self, world_id: str) -> bool:
        """Do to a dead world what its death should have: remove its record and its inboxes.

        Its unapplied requests go back to every executor. The plans the dead world ran are
        recovered at once: their running steps become "Abnormal termination" and the plans
        are stored paused (reason "crash"); an executor world then continues them by their
        policies, and a client world asks the executors serving each plan's queue to (a
        request stored until one reads it), so a plan is never left `running` on a world
        that is gone.
        Returns whether the record existed.

        Raises:
            ValueError: ``world_id`` is this world's own id.
        """
        if self._invalidator is not None:
            return self._invalidator.invalidate(world_id)
        removed = self._registry.invalidate(world_id)
        if removed:
            self.log.warning("invalidated a world on request", invalidated_world_id=world_id)
            for plan_id, owner in self.storage.running_plan_owners().items():
                if owner == world_id and self._registry.take_orphan(plan_id):
                    plan = self._recover_orphan(plan_id)  # stored paused
                    if plan is not None and interrupted(plan):
                        self._hand_over([plan])  # for the executors serving its queue
        return removed


_KEEPS_EVENTS = (StepState.PENDING, StepState.SUSPENDED, StepState.ERROR, StepState.RUNNING)
"""The states in which a step of a plan that runs nowhere can still take an event (a
failed one runs again on resume; a running one was left by a world that died)."""
