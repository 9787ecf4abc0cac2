"""`PlanSupervisor`: one actor per running plan, parent of its step actors (one module: one actor).

It drives the plan's `pydynflow.execution.PlanExecution` (which decides what happens next)
and does what the decisions ask: commit each change set through the persistence actor, find
a worker slot for each step that wants one (`pydynflow.actors.plan_slots`), start the step's
actor once its move to ``running`` is committed, arm retry timers and run the finalize phase
on a worker. A step counts as done only once its state is committed, and the commit of a
step's outcome carries the move to ``running`` of the steps it unblocks when they get a
worker at once (the worker it freed, within its quantum: `pydynflow.actors.slots`): one
commit per step carries a sequence forward.

If a commit fails, the supervisor stops driving the plan (what is stored is the truth),
waits for its running steps' code to return, and hands the plan back to the executor, which
recovers it from storage.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydynflow.action import is_async_run, runs_in_world
from pydynflow.actors.messages import (
    CancelPlan,
    Claim,
    DeliverEvent,
    Event,
    GoAhead,
    HaltPlan,
    Parked,
    PlanDone,
    Resume,
    StepOutcome,
    StoreHeld,
    Wind,
)
from pydynflow.actors.persistence import changes, store_plan
from pydynflow.actors.plan_slots import FINALIZE_SLOT, PlanSlots, SlotGranted
from pydynflow.actors.pooled import (
    PooledActor,
    on_dispatcher_thread,
    stop_if_alive,
    tell,
    tell_and_run,
    tell_if_alive,
)
from pydynflow.actors.runtime import Runtime
from pydynflow.actors.step import StepActor
from pydynflow.adapters import telemetry
from pydynflow.clock import ClockClosedError
from pydynflow.errors import (
    AlreadyRunning,
    DynflowError,
    EventRejected,
    FatalPersistenceError,
    PersistenceError,
)
from pydynflow.events import Abort, Cancel, decode_event
from pydynflow.events import Skip as SkipEvent
from pydynflow.execution import Advance, NotRunnable, PlanExecution
from pydynflow.logging import enabled, get_logger
from pydynflow.mixins import is_cancellable
from pydynflow.mixins.singleton import singleton_classes
from pydynflow.outcome import FinalizeDone, failed_outcome
from pydynflow.phases import RUN, execute_finalize_flow, finalize_phase, new_action
from pydynflow.plan import ExecutionPlan, StepError
from pydynflow.states import PlanState, StepState
from pydynflow.storage.singleton_lock import check_singleton_lock


class PlanSupervisor(PlanSlots, PooledActor):
    """Run one execution plan: its run flow through step actors, then its finalize flow.

    ``mode``: ``"execute"`` (a planned plan), ``"resume"`` (a person resumes it: failed
    steps run again) or ``"continue"`` (after a stop or a crash: failed steps are failures
    for their policies). ``note``: details of the ``"resume"`` history entry.
    """

    # Rarely set: defaults on the class, so that many waiting plans stay small.
    stored_events: dict[int, list[Event]] | None = None  # for steps without an actor yet
    # The stored events read at start (not a fresh plan): those stored by another world
    # between that read and the claim are looked for once the claim is committed.
    seen_envelopes: frozenset[int] | None = None
    broken: BaseException | None = None  # a commit failed: stop driving the plan
    finalizing = False  # the finalize phase runs on a worker
    singletons: frozenset[str] = frozenset()  # its `Singleton` classes: their steps' locks
    held: dict[int, HeldEvent] | None = None  # events handed to parked steps, not stored yet
    # Messages that came while a stored plan's claim was in flight: handled once it is
    # committed, so that nothing of this supervisor is written if another world wins it.
    unclaimed: list[Any] | None = None

    def __init__(
        self,
        runtime: Runtime,
        plan: ExecutionPlan,
        executor: Any,
        stored: Any = None,
        mode: str = "execute",
        note: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stored = stored  # a fresh plan: stored together with its start
        self.runtime = runtime
        self.plan = plan
        self.executor = executor
        self.mode = mode
        self.note = note
        self.core = PlanExecution(plan, runtime.world_id, auto_rescue=runtime.auto_rescue)
        self.children: dict[int, Any] = {}  # step id -> its live StepActor

    @functools.cached_property
    def log(self) -> Any:
        """Return this plan's logger (bound on first use: most plans never log)."""
        root = self.plan.root_plan_step
        return get_logger(
            world_id=self.runtime.world_id,
            plan_id=self.plan.id,
            label=self.plan.label,
            action_class=root.action_class_name if root else None,
        )

    # -- start ---------------------------------------------------------------------------

    def on_start(self) -> None:
        plan, core = self.plan, self.core
        singletons = singleton_classes(plan)
        if singletons:
            self.singletons = singletons
        stored_events: list[tuple[int, str]] = []
        if self.stored is None:  # not a fresh plan: events may be stored for it
            storage = self.runtime.storage
            core.chosen_ids = storage.chosen_event_ids(plan.id)
            seen = set()
            for envelope_id, step_id, payload, event_id in storage.envelopes(
                plan.id, with_event_ids=True
            ):
                seen.add(envelope_id)
                self._keep(step_id, Event(decode_event(payload), persisted=True))
                stored_events.append((step_id, event_id))
            self.seen_envelopes = frozenset(seen)
        try:
            advance = core.begin(
                resume=self.mode == "resume",
                continuing=self.mode == "continue",
                stored_events=stored_events,
                note=self.note,
            )
        except NotRunnable as exc:
            self._give_up(exc)
            return
        # The first steps that get a worker move to running in the claim's own transaction:
        # if the claim is refused, none of it is written.
        self._grant(advance)
        me = self.actor_ref
        if self.stored is not None:  # a fresh plan: its first write is the claim
            runtime, stored, self.stored = self.runtime, self.stored, None  # handed over
            store_plan(
                runtime.persistence,
                runtime.storage,
                plan,
                stored,
                then=lambda error: tell_and_run(me, _Claimed(advance, error)),
            )
        else:
            self.unclaimed = []
            self._send(
                advance,
                claim=Claim(plan.id, (PlanState.PLANNED.value, PlanState.PAUSED.value)),
                on_commit=lambda error: me.tell(_Claimed(advance, error)),
            )
        self._hand_off()
        self._arm_retries(advance)

    def on_receive(self, message: Any) -> Any:
        if self.unclaimed is not None and not isinstance(message, _Claimed):
            self.unclaimed.append(message)  # a retry, a slot, an event: after the claim
            return None
        if isinstance(message, StepOutcome):
            self._outcome(message.step_id, message.outcome)
        elif isinstance(message, _Committed):
            self._committed(message.advance, message.error)
        elif isinstance(message, SlotGranted):
            self._slot_granted(message.step_id)
        elif isinstance(message, _Claimed):
            self._claimed(message.advance, message.error)
        elif isinstance(message, FinalizeDone):
            self._finalize_done(message)
        elif isinstance(message, _EventStored):
            self._event_stored(message.step_id, message.event)
        elif isinstance(message, _RetryStep):
            self._apply(self.core.retry_due(message.step_id))
        elif isinstance(message, Resume):
            self._resume(message)
        elif isinstance(message, StoreHeld):
            self._store_held(message.step_id)
        elif isinstance(message, DeliverEvent) and not message.durable:
            self._wake_up(message.step_id, message.payload, message.reply)
        elif isinstance(message, DeliverEvent):
            self._deliver(
                message.step_id,
                message.payload,
                message.optional,
                message.reply,
                message.event_id,
                message.note,
            )
        elif isinstance(message, CancelPlan):
            self._cancel(message)
        elif isinstance(message, HaltPlan):
            message.reply.set_result(True)
            if message.note is not None:  # written with the plan's row when it stops
                self.plan.note("halt", self.runtime.world_id, message.note)
            self._apply(self.core.wind_down(halt=True))
        elif isinstance(message, Wind):
            self._apply(self.core.wind_down())
        return None

    def _claimed(self, advance: Advance, error: BaseException | None) -> None:
        waiting, self.unclaimed = self.unclaimed or (), None
        if error is not None:
            self._release_all()
            self._give_up(AlreadyRunning(f"execution plan {self.plan.id} is already running"))
            for message in waiting:  # as if they came after the stop
                dead_letter = getattr(message, "dead_letter", None)
                if dead_letter is not None:
                    dead_letter()
            return
        if enabled(logging.INFO):
            self.log.info("plan started", mode=self.mode)
        self._committed(advance, None)
        if self.seen_envelopes is not None:
            self._late_events(self.seen_envelopes)
            self.seen_envelopes = None
        for message in waiting:
            self.on_receive(message)

    def _late_events(self, seen: frozenset[int]) -> None:
        """Take the events another world stored for this plan (not running then) after
        this supervisor read them at its start and before its claim was committed."""
        try:
            stored = self.runtime.storage.envelopes(self.plan.id, with_event_ids=True)
        except PersistenceError as exc:  # they stay stored: the next start takes them
            self.log.error("cannot read the plan's stored events", error=str(exc))
            return
        for envelope_id, step_id, payload, event_id in stored:
            if envelope_id not in seen:
                self.core.keep_stored_event(step_id, event_id)
                self._event_stored(step_id, Event(decode_event(payload), persisted=True))

    def _give_up(self, error: BaseException) -> None:
        self.executor.tell(PlanDone(self.plan.id, None, error))
        self.stop()

    # -- driving the core ----------------------------------------------------------------

    def _apply(
        self, advance: Advance, then: Callable[[BaseException | None], object] | None = None
    ) -> None:
        """Carry out a decision: find workers, commit, then act on what the commit allows.

        ``then``: called with the commit's error (or None) on the thread that acknowledges
        it, before anything else happens (it answers the sender of an event held for it).
        """
        if self.broken is not None:
            return
        self._withdraw(advance.withdraw, advance)
        self._grant(advance)
        after = bool(
            advance.launch
            or advance.parked
            or advance.finalize
            or advance.finished
            or advance.stop_parked
        )
        if advance.has_changes():
            me = self._actor_ref  # `actor_ref` without pykka's property (once per step)
            # The ack comes on the writer's reply thread, which has nothing else to do for
            # this plan: the supervisor goes on right there if it is idle, instead of a
            # dispatcher thread being woken for it.
            on_commit: Callable[[BaseException | None], object] | None = (
                (lambda error: tell_and_run(me, _Committed(advance, error))) if after else None
            )
            if then is not None:
                on_commit = _first(then, on_commit)
            self._send(advance, on_commit=on_commit)
        elif after:
            self._committed(advance, None)
        self._hand_off()
        self._arm_retries(advance)

    def _committed(self, advance: Advance, error: BaseException | None) -> None:
        """A decision's changes are committed (or failed to be): do what follows."""
        if error is not None:
            self._break(error)
            return
        if self.broken is not None:
            return
        children = self.children
        for step_id in advance.parked:
            child = children.get(step_id)
            if child is not None:
                tell_if_alive(child, Parked())
        if advance.launch:
            self._launch(advance.launch)
        if advance.stop_parked:
            self._store_all_held()
            for child in children.values():  # parked steps: they stay suspended
                stop_if_alive(child)
            children.clear()
        if advance.finalize:
            self._want_finalize()
        if advance.finished:
            self._finished()

    def _send(
        self,
        advance: Advance,
        claim: Claim | None = None,
        on_commit: Callable[[BaseException | None], object] | None = None,
    ) -> None:
        message = changes(
            self.runtime.storage,
            plan=self.plan if advance.plan_row else None,
            steps=advance.steps,
            actions=advance.actions,
            claim=claim,
            on_commit=on_commit,
            chunks=advance.chunks,
            envelope_add=tuple(advance.envelope_add),
            envelope_pop=tuple(advance.envelope_pop),
            envelope_clear=tuple(advance.envelope_clear),
        )
        if self.handoffs or on_dispatcher_thread():
            # A plan this one hands a slot to sends its change next: the two go to the
            # writer together (one transaction), when that one's is sent.
            tell(self.runtime.persistence, message)
        else:
            # A worker's or the writer's reply thread, with nothing else to do: hand the
            # change to the writer from here, not after waking the persistence thread.
            tell_and_run(self.runtime.persistence, message)

    def _arm_retries(self, advance: Advance) -> None:
        me = self.actor_ref
        for step_id, delay in advance.retry:
            # A closed clock: the world is stopping, and the step stays failed.
            with contextlib.suppress(ClockClosedError):
                self.runtime.clock.schedule(
                    delay, functools.partial(tell_if_alive, me, _RetryStep(step_id))
                )

    # -- steps ---------------------------------------------------------------------------

    def _launch(self, step_ids: list[int]) -> None:
        plan, children, runtime = self.plan, self.children, self.runtime
        singletons = self.singletons
        for step_id in step_ids:
            child = children.get(step_id)
            if child is not None:  # a parked step resumed with its event
                tell_if_alive(child, GoAhead())
                continue
            step = plan.steps[step_id]
            if singletons and step.action_class_name in singletons and self._refused(step):
                continue
            if enabled(logging.DEBUG):
                self.log.debug(
                    "step started",
                    step_id=step_id,
                    action_class=step.action_class_name,
                    phase=step.phase,
                )
            record = plan.actions[step.action_id]
            cls = record.action_class
            in_process = not runtime.processes or is_async_run(cls) or runs_in_world(cls)
            world = runtime.world if in_process else None  # a world does not pickle
            action = new_action(record, RUN, world=world, middleware=runtime.middleware)
            action.error = step.error  # e.g. what a step being skipped failed with
            event = SkipEvent() if step.state == StepState.SKIPPING else None
            kept = self.stored_events.pop(step_id, ()) if self.stored_events else ()
            children[step_id] = StepActor.start(
                runtime,
                self.actor_ref,
                step_id,
                step.queue,
                action,
                event,
                tuple(kept),
                step.attempts,
                _dispatcher=runtime.dispatcher,
                # Its first turn here (the writer's reply thread, usually): not behind a
                # dispatcher thread's wake-up, which a step's worker would then wait for.
                _first_turn_here=True,
            )

    def _refused(self, step: Any) -> bool:
        """Check that the plan holds the lock of a `Singleton` step about to run; if it
        cannot, fail the step without running its code (its outcome comes as a message)."""
        if step.state == StepState.SKIPPING:  # its cleanup runs whoever holds the lock
            return False
        runtime = self.runtime
        try:
            refusal = check_singleton_lock(
                runtime.storage, step.action_class_name, self.plan.id, runtime.world_id
            )
        except DynflowError as exc:  # the database could not say: do not run it blindly
            refusal = exc
        if refusal is None:
            return False
        self._actor_ref.tell(StepOutcome(step.id, failed_outcome(refusal)))
        return True

    def _outcome(self, step_id: int, outcome: Any) -> None:
        if outcome.state != StepState.SUSPENDED:
            self.children.pop(step_id, None)
        advance = Advance()
        if self.broken is not None:
            self._release(step_id, advance)
            self._hand_off()
            self._maybe_done_broken()
            return
        self.core.outcome(step_id, outcome, advance)
        # Its code returned: the worker is free. This plan's next step keeps it, or a step
        # of this plan that waited for it, and moves to running in this same commit; else
        # another plan's is told after it is sent.
        self._pass_on_or_release(step_id, advance)
        self._apply(advance)

    # -- events --------------------------------------------------------------------------

    def _deliver(
        self,
        step_id: int,
        payload: Any,
        optional: bool,
        reply: Any,
        chosen: str | None,
        note: dict[str, Any] | None = None,
    ) -> None:
        """Store an event for a step, then hand it to its actor (or keep it for its start);
        for a parked, idle step, hand it over first and store it with the step's wake-up
        (`_may_hold`). The sender is answered once the event is stored.

        ``note``: who sent it (an operator): an "event" history entry stored with it.
        """
        event_id = chosen or _new_event_id()
        try:
            if self.broken is not None:
                raise EventRejected(f"execution plan {self.plan.id} is not running here")
            advance = self.core.accept_event(step_id, event_id, payload, chosen is not None)
            if advance is None:  # its sender sent it before: applied once
                reply.set_result(True)
                return
        except EventRejected as exc:
            telemetry.current().event_rejected()
            if optional:
                reply.set_result(False)
            else:
                reply.set_exception(exc)
            return
        except DynflowError as exc:
            reply.set_exception(exc)
            return
        if note is not None:
            details = {**note, "step_id": step_id, "event_id": event_id}
            self.plan.note("event", self.runtime.world_id, details)
            advance.plan_row = True
        elif self._may_hold(step_id):
            # A parked step with nothing else to do: it takes the event at once, and the
            # envelope is written in the commit that moves it to running (not one before).
            held = HeldEvent(advance, reply)
            if self.held is None:
                self.held = {}
            self.held[step_id] = held
            if tell_if_alive(self.children[step_id], Event(payload, persisted=True, held=True)):
                return
            del self.held[step_id]
        self._store_held(step_id)  # an event held for this step is older: it is stored first
        me = self.actor_ref

        def on_commit(error: BaseException | None) -> None:
            if error is not None:
                reply.set_exception(error)
                me.tell(_Committed(Advance(), error))
                return
            me.tell(_EventStored(step_id, Event(payload, persisted=True)))
            reply.set_result(True)

        self._send(advance, on_commit=on_commit)

    def _may_hold(self, step_id: int) -> bool:
        """Return whether an event just accepted for ``step_id`` may go to its actor
        unstored: the step is parked, its actor lives, and no other event of it is
        accepted and not consumed (its envelope would be the older one)."""
        core = self.core
        if step_id not in core.parked or core.winding_down or step_id not in self.children:
            return False
        if (core.waking and step_id in core.waking) or (self.held and step_id in self.held):
            return False
        pending = core.events.get(step_id) if core.events is not None else None
        return pending is not None and len(pending) == 1

    def _resume(self, message: Resume) -> None:
        """A parked step has an event to run with: it moves to ``running`` once a worker is
        free for it. A held event's envelope goes into that commit if the step gets its
        worker at once; else it is stored now, and its sender answered."""
        step_id = message.step_id
        held = self.held.pop(step_id, None) if message.held and self.held else None
        advance = self.core.wake(step_id, message.persisted)
        if held is None:
            self._apply(advance)
            return
        self._grant(advance)  # an async run has no worker to wait for
        if step_id in advance.launch:
            advance.envelope_add = [*held.advance.envelope_add, *advance.envelope_add]
            self._apply(advance, then=held.answer)
        else:
            self._send_held(held)
            self._apply(advance)

    def _store_held(self, step_id: int) -> None:
        """Store the event held for ``step_id``, if any (the step could not take it at once,
        or another event for it came)."""
        held = self.held.pop(step_id, None) if self.held else None
        if held is not None:
            self._send_held(held)

    def _store_all_held(self) -> None:
        """Store every held event (their steps stay suspended: the next run gets them)."""
        for step_id in list(self.held or ()):
            self._store_held(step_id)

    def _send_held(self, held: HeldEvent) -> None:
        me = self._actor_ref

        def on_commit(error: BaseException | None) -> None:
            held.answer(error)
            if error is not None:
                tell_if_alive(me, _Committed(Advance(), error))

        self._send(held.advance, on_commit=on_commit)

    def _wake_up(self, step_id: int, payload: Any, reply: Any) -> None:
        """Hand a wake-up (`Ping`) to a step without storing it: it only asks the step to
        look again at what is stored, so a world that dies loses nothing with it (the
        step's next run does the same). Answers whether the step took it."""
        step = self.plan.steps.get(step_id)
        if step is None or self.broken is not None or not self.core.takes_events(step):
            reply.set_result(False)
            return
        self._event_stored(step_id, Event(payload, persisted=False))
        reply.set_result(True)

    def _event_stored(self, step_id: int, event: Event) -> None:
        child = self.children.get(step_id)
        if child is not None:
            tell_if_alive(child, event)
        elif self.core.takes_events(self.plan.steps[step_id]):
            self._keep(step_id, event)  # not started yet: it gets the event when it is
        # else: the step ended first; the core recorded the event as not delivered

    def _keep(self, step_id: int, event: Event) -> None:
        """Hold an event for a step whose actor is not started yet."""
        if self.stored_events is None:
            self.stored_events = {}
        self.stored_events.setdefault(step_id, []).append(event)

    def _cancel(self, message: CancelPlan) -> None:
        if message.note is not None:  # written with the plan's row when it next changes
            self.plan.note("cancel", self.runtime.world_id, message.note)
        event = Abort() if message.force else Cancel()
        asked = 0
        for step_id in list(self.children):
            step = self.plan.steps[step_id]
            if step.state in (StepState.RUNNING, StepState.SUSPENDED) and is_cancellable(
                step.action_class
            ):
                self._deliver(step_id, event, True, _Ignore(), None)
                asked += 1
        message.reply.set_result(asked)

    # -- finalize ------------------------------------------------------------------------

    def _want_finalize(self) -> None:
        """The finalize phase is due: it runs on a worker of the default queue."""
        claim = self._claim(FINALIZE_SLOT)
        if claim.slots.take(claim):
            self._hold(claim)
            self._run_finalize()
        else:
            if self.claims is None:
                self.claims = {}
            self.claims[FINALIZE_SLOT] = claim

    def _run_finalize(self) -> None:
        steps, records = self.core.finalize_work()
        me = self.actor_ref

        def on_done(result: FinalizeDone | None, error: BaseException | None) -> None:
            if error is not None or result is None:  # the runner itself broke: fail the first
                steps[0].state = StepState.ERROR
                steps[0].error = StepError.from_exception(
                    error or RuntimeError("finalize returned nothing")
                )
                result = FinalizeDone(tuple(steps), tuple(records.values()))
            tell_and_run(me, result)

        # The action objects are built here: a worker process imports their classes from
        # the pickles, while a stored class name would not resolve there.
        world, middleware = self.runtime.world_for_workers, self.runtime.middleware
        finalizers = {
            aid: new_action(r, "finalize", world=world, middleware=middleware)
            for aid, r in records.items()
        }
        phase = finalize_phase(middleware, self.plan, steps, records, world)
        self.finalizing = True
        self.runtime.pool("default").submit(
            execute_finalize_flow, (steps, records, finalizers, *phase), on_done
        )

    def _finalize_done(self, message: FinalizeDone) -> None:
        self.finalizing = False
        if self.broken is not None:
            self._release(FINALIZE_SLOT, Advance())
            self._hand_off()
            self._maybe_done_broken()
            return
        advance = self.core.finalize_done(message.steps, message.actions, message.chunks)
        self._release(FINALIZE_SLOT, advance)
        self._apply(advance)

    # -- end -----------------------------------------------------------------------------

    def _finished(self) -> None:
        plan = self.plan
        if enabled(logging.INFO):
            self.log.info("plan finished", state=plan.state, result=plan.result)
        self._store_all_held()  # none, usually: a held event's step is parked
        self._release_all()
        # Usually on the writer's reply thread (see `_apply`): the executor takes the news
        # there too if it is idle, instead of a dispatcher thread being woken for it.
        tell_and_run(self.executor, PlanDone(plan.id, plan, None))
        self.stop_now()

    def _break(self, error: BaseException) -> None:
        """A commit failed: stop driving the plan; once no code of it runs, hand it back."""
        if self.broken is not None:
            return
        self.broken = error
        self.log.error("a commit failed: the plan is handed back to be recovered", error=str(error))
        held, self.held = self.held, None
        for event in (held or {}).values():
            event.answer(error)
        if self.claims:
            self._withdraw(list(self.claims), Advance())
        for step_id in self.core.parked:
            child = self.children.pop(step_id, None)
            if child is not None:
                stop_if_alive(child)
        # Slots granted to steps whose start was in the failed commit: never launched.
        advance = Advance()
        for step_id in list(self.holding):
            idle = step_id not in self.children if step_id else not self.finalizing
            if idle:
                self._release(step_id, advance)
        self._hand_off()
        self._maybe_done_broken()

    def _maybe_done_broken(self) -> None:
        if (
            self.holding
            or self.finalizing
            or any(sid not in self.core.parked for sid in self.children)
        ):
            return  # code of this plan still runs: its worker is not free yet
        for child in self.children.values():
            stop_if_alive(child)
        error = self.broken
        if not isinstance(error, PersistenceError):
            error = PersistenceError(str(error))
        # After a passing failure that lasted too long the world stops: nothing to reclaim.
        reclaim = not isinstance(error, FatalPersistenceError)
        self.executor.tell(PlanDone(self.plan.id, None, error, reclaim=reclaim))
        self.stop_now()


@dataclass(slots=True)
class _Claimed:
    """The plan's claim (``planned``/``paused`` -> ``running``) committed, or was refused."""

    advance: Advance
    error: BaseException | None = None


@dataclass(slots=True)
class _Committed:
    """A decision's changes are committed (or failed to be)."""

    advance: Advance
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _RetryStep:
    """The supervisor's own timer: a failed step's backoff is over."""

    step_id: int


@dataclass(frozen=True, slots=True)
class _EventStored:
    """The supervisor's own note: an event is stored; hand it to the step's actor."""

    step_id: int
    event: Event


class HeldEvent:
    """An event accepted for a parked step and handed to it before being stored: its
    envelope (``advance``) is committed with the step's wake-up, or on its own; then its
    sender is answered through ``reply``."""

    __slots__ = ("advance", "reply")

    def __init__(self, advance: Advance, reply: Any) -> None:
        self.advance = advance
        self.reply = reply

    def answer(self, error: BaseException | None) -> None:
        """Answer the sender once the envelope's commit is done (or failed)."""
        if error is not None:
            self.reply.set_exception(error)
        else:
            self.reply.set_result(True)


def _first(
    then: Callable[[BaseException | None], object],
    rest: Callable[[BaseException | None], object] | None,
) -> Callable[[BaseException | None], None]:
    def on_commit(error: BaseException | None) -> None:
        then(error)
        if rest is not None:
            rest(error)

    return on_commit


class _Ignore:
    """A reply sink for events the supervisor sends itself (cancel)."""

    event_id = None

    def set_result(self, value: Any) -> None:
        """Drop the answer."""

    def set_exception(self, error: BaseException) -> None:
        """Drop the answer."""


def _new_event_id() -> str:
    return uuid.uuid4().hex
