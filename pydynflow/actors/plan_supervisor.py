"""`PlanSupervisor`: one actor per running execution plan, the parent of its step actors.

It claims the plan (``planned``/``paused`` -> ``running``, a conditional update, so a plan
never runs twice at once) and walks the run flow with a `FlowGraph`: concurrence branches
in parallel, sequences in order, a failed step stops only its own sequence.

The supervisor is the only one that changes its plan's states, and every change goes to the
persistence actor. A step's user code starts only after its move to ``running`` is
committed; a step's outcome is committed in the same transaction as the move to
``running`` of the steps it unblocks, and only then are those started. So one commit per
step carries a sequence forward, and a step counts as done only once its state is durable.

When the run flow is complete the finalize flow runs in order on a worker and all of it is
committed in one transaction. A failed step pauses the plan; what else a failure can mean
(Skip, Fail, Retry) is decided here, as the parent.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydynflow.actors.dispatch import PooledActor, stop_if_alive, tell, tell_and_run, tell_if_alive
from pydynflow.actors.messages import (
    CancelPlan,
    Claim,
    Claimed,
    DeliverEvent,
    Event,
    FinalizeDone,
    Finished,
    GoAhead,
    HaltPlan,
    Launch,
    Parked,
    PlanDone,
    Resume,
    StepOutcome,
    Wind,
)
from pydynflow.actors.persistence import changes, store_plan
from pydynflow.actors.runtime import Runtime
from pydynflow.actors.step import StepActor, failed_outcome
from pydynflow.clock import ClockClosedError
from pydynflow.errors import DynflowError, EventRejected, UnknownStep
from pydynflow.events import Abort, Cancel, decode_event, encode_event, is_cancellable
from pydynflow.events import Skip as SkipEvent
from pydynflow.logging import enabled, get_logger
from pydynflow.phases import (
    FINALIZE,
    RUN,
    PhaseOutcome,
    execute_finalize,
    is_async_run,
    new_action,
    run_accepts_event,
)
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.references import has_references, resolve_references
from pydynflow.rescue import Fail, Pause, Retry, Skip, plan_rescue_strategy
from pydynflow.scheduling import FlowGraph
from pydynflow.skipping import skip_plan_steps
from pydynflow.states import Phase, PlanState, StepState

# A suspended step runs again from run(None): after a crash, a halt or a graceful stop.
_NONE: frozenset[int] = frozenset()
_RUNNABLE = (StepState.PENDING, StepState.ERROR, StepState.SKIPPING, StepState.SUSPENDED)
_TAKES_EVENTS = (StepState.RUNNING, StepState.SUSPENDED)
_DONE = (StepState.SUCCESS, StepState.SKIPPED)


class PlanSupervisor(PooledActor):
    """Run one execution plan: its run flow through step actors, then its finalize flow."""

    # Rarely set: defaults on the class, and frozensets replaced (never mutated in place),
    # so that 10,000 waiting plans do not each carry empty sets (about 0.2 KB each).
    winding_down = False
    halting = False
    finishing = False
    had_events: frozenset[int] = _NONE  # steps that got stored events (envelopes)
    stored_events: dict[int, list[Event]] | None = None  # for steps not started yet
    rescued: frozenset[int] = _NONE  # failed steps auto-rescue already acted on
    retrying: frozenset[int] = _NONE  # failed steps waiting out a Retry backoff

    def __init__(
        self, runtime: Runtime, plan: ExecutionPlan, executor: Any, stored: Any = None
    ) -> None:
        super().__init__()
        self.stored = stored  # a fresh plan: stored together with its start
        self.runtime = runtime
        self.plan = plan
        self.executor = executor
        self.running: set[int] = set()  # steps in flight: running, or parked (suspended)
        self.parked: set[int] = set()  # steps whose suspended state is committed
        self.children: dict[int, Any] = {}  # step id -> its live StepActor
        self.graph = FlowGraph(plan.run_flow)

    @functools.cached_property
    def log(self) -> Any:
        """Return this plan's logger (bound on first use: most plans never log)."""
        root = self.plan.root_plan_step
        return get_logger(
            world_id=self.runtime.world_id,
            plan_id=self.plan.id,
            label=self.plan.label,
            step_id=None,  # plan-level lines; step lines override these three
            action_class=root.action_class_name if root else None,
            phase=None,
        )

    # -- start ---------------------------------------------------------------------------

    def on_start(self) -> None:
        plan = self.plan
        if plan.state not in (PlanState.PLANNED, PlanState.PAUSED):
            self._give_up(DynflowError(f"execution plan {plan.id} is {plan.state}, not runnable"))
            return
        plan.transition(PlanState.RUNNING, self.runtime.world_id)
        if self.stored is None:  # not a fresh plan: deliver events stored for it
            for _, step_id, payload in self.runtime.storage.envelopes(plan.id):
                event = Event(decode_event(payload), persisted=True)
                self._keep_event(step_id, event)
                self.had_events |= {step_id}
        # The first steps move to running in the claim's own transaction: if the claim is
        # refused, none of it is written.
        done = [sid for sid, step in plan.steps.items() if step.state in _DONE]
        steps, actions = self._start_steps(self.graph.start(done))
        launch = tuple(step.id for step in steps if step.id in self.running)
        me = self.actor_ref
        if self.stored is not None:  # a fresh plan: its first write is the claim
            runtime, stored, self.stored = self.runtime, self.stored, None  # handed over
            store_plan(
                runtime.persistence,
                runtime.storage,
                plan,
                stored,
                then=lambda error: tell_and_run(me, Claimed(launch, error)),
            )
            return
        self._send(
            steps=steps,
            actions=actions,
            plan_row=True,
            claim=Claim(plan.id, (PlanState.PLANNED.value, PlanState.PAUSED.value)),
            on_commit=lambda error: me.tell(Claimed(launch, error)),
        )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StepOutcome):
            self._step_outcome(message.step_id, message.outcome)
        elif isinstance(message, Launch):
            self._launch(message)
        elif isinstance(message, Claimed):
            self._claimed(message.launch, message.error)
        elif isinstance(message, FinalizeDone):
            self._finalize_done(message)
        elif isinstance(message, Finished):
            self._finished(message.error)
        elif isinstance(message, _EventStored):
            child = self.children.get(message.step_id)
            if child is not None:
                tell_if_alive(child, message.event)
            else:  # not launched yet: it gets the event when it is
                self._keep_event(message.step_id, message.event)
        elif isinstance(message, _RetryStep):
            self._retry(message.step_id)
        elif isinstance(message, _StepParked):
            self._step_parked(message.step_id)
        elif isinstance(message, Resume):
            self._resume(message)
        elif isinstance(message, DeliverEvent):
            self._deliver(message.step_id, message.payload, message.optional, message.reply)
        elif isinstance(message, CancelPlan):
            self._cancel(message)
        elif isinstance(message, HaltPlan):
            self.halting = self.winding_down = True
            message.reply.set_result(True)
            self._maybe_run_flow_finished()
        elif isinstance(message, Wind):
            self.winding_down = True
            if self.finishing and self.retrying:  # a finalize retry is waiting: stop now
                self.retrying = _NONE
                self._finish(PlanState.PAUSED, [], [])
            else:
                self._maybe_run_flow_finished()
        return None

    def _claimed(self, launch: tuple[int, ...], error: BaseException | None) -> None:
        if error is not None:
            self._give_up(DynflowError(f"execution plan {self.plan.id} is already running"))
            return
        if enabled(logging.INFO):
            self.log.info("plan started")
        if launch:
            self._launch(Launch(launch))
        else:
            self._maybe_run_flow_finished()

    def _give_up(self, error: BaseException) -> None:
        self.executor.tell(PlanDone(self.plan.id, None, error))
        self.stop()

    # -- run flow ------------------------------------------------------------------------

    def _start_steps(self, step_ids: Iterable[int]) -> tuple[list[Step], list[ActionRecord]]:
        """Move ready steps to ``running`` in memory; return what must be committed first.

        A skipped step whose ``run`` takes no event is marked ``skipped`` right here, and
        the steps it unblocks are started in turn.
        """
        steps: list[Step] = []
        actions: list[ActionRecord] = []
        ready = list(step_ids)
        while ready:
            step_id = ready.pop(0)
            step = self.plan.steps[step_id]
            record = self.plan.actions[step.action_id]
            if self.winding_down:
                self.graph.fail(step_id)  # not started: it stays as it is
                continue
            steps.append(step)
            if step.state not in _RUNNABLE:
                self._fail(step, DynflowError(f"step {step_id} cannot run from {step.state}"))
                continue
            if step.state == StepState.SKIPPING and not run_accepts_event(record.action_class):
                step.transition(StepState.SKIPPED)
                self._stamp(step)
                ready.extend(self.graph.complete(step_id))
                continue
            if step.state != StepState.SKIPPING:
                if has_references(record.input):
                    try:
                        record.input = resolve_references(record.input, self._output_of)
                    except DynflowError as exc:
                        self._fail(step, exc)
                        continue
                    actions.append(record)
                step.transition(StepState.RUNNING)
            if step.started_at is None:
                step.started_at = utcnow()
            self.running.add(step_id)
        return steps, actions

    def _keep_event(self, step_id: int, event: Event) -> None:
        """Hold an event for a step whose actor is not started yet."""
        if self.stored_events is None:
            self.stored_events = {}
        self.stored_events.setdefault(step_id, []).append(event)

    def _output_of(self, action_id: int) -> dict[str, Any]:
        return self.plan.actions[action_id].output

    def _fail(self, step: Step, exc: BaseException) -> None:
        step.state = StepState.ERROR  # bypasses the table: the step never started
        step.error = StepError.from_exception(exc)
        self.graph.fail(step.id)

    def _commit_and_continue(
        self, steps: list[Step], actions: list[ActionRecord], **extra: Any
    ) -> None:
        """Commit state changes; then launch the steps moved to running, or finish."""
        running, children = self.running, self.children
        launch = tuple([s.id for s in steps if s.id in running and s.id not in children])
        if not launch and self._run_flow_over():
            self._after_run_flow(steps, actions, **extra)
            return
        if not steps and not actions:
            return
        me = self._actor_ref  # `actor_ref` without pykka's property (once per step)
        # The ack comes on the writer's reply thread, which has nothing else to do for this
        # plan: the supervisor starts its next steps right there if it is idle, instead of
        # waking a dispatcher thread for it (W1: 5% less CPU; the writer never waits for it).
        self._send(
            steps=steps,
            actions=actions,
            on_commit=(lambda error: tell_and_run(me, Launch(launch, error))) if launch else None,
            **extra,
        )

    def _launch(self, message: Launch) -> None:
        if message.error is not None:
            self.log.error("steps could not be marked running", error=str(message.error))
        for step_id in message.step_ids:
            step = self.plan.steps[step_id]
            if message.error is not None:
                self._step_outcome(step_id, failed_outcome(message.error))
                continue
            event = SkipEvent() if step.state == StepState.SKIPPING else None
            if enabled(logging.DEBUG):
                self.log.debug(
                    "step started",
                    step_id=step_id,
                    action_class=step.action_class_name,
                    phase=step.phase,
                )
            record = self.plan.actions[step.action_id]
            in_process = not self.runtime.processes or is_async_run(record.action_class)
            world = self.runtime.world if in_process else None  # a world does not pickle
            action = new_action(record, RUN, world=world)
            action.error = step.error  # e.g. what a step being skipped failed with
            self.children[step_id] = StepActor.start(
                self.runtime,
                self.actor_ref,
                step_id,
                step.queue,
                action,
                event,
                tuple(self.stored_events.pop(step_id, ())) if self.stored_events else (),
                _dispatcher=self.runtime.dispatcher,
            )

    def _step_outcome(self, step_id: int, outcome: PhaseOutcome) -> None:
        step = self.plan.steps[step_id]
        record = self.plan.actions[step.action_id]
        chunks = [(self.plan.id, record.id, *chunk) for chunk in outcome.chunks]
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        changed = [record] if outcome.output != record.output else []
        record.output = outcome.output
        if outcome.state == StepState.SUSPENDED:
            self._suspended(step, changed, chunks)
            return
        self.running.discard(step_id)
        self.parked.discard(step_id)
        self.children.pop(step_id, None)
        skipping = step.state == StepState.SKIPPING
        if outcome.state == StepState.SUCCESS:
            step.transition(StepState.SKIPPED if skipping else StepState.SUCCESS)
            if not skipping:  # a skipped step keeps the error it was skipped for
                step.error = None
        else:
            step.transition(StepState.ERROR)
            step.error = outcome.error
        self._stamp(step)
        if enabled(logging.DEBUG):
            self.log.debug(
                "step finished",
                step_id=step_id,
                action_class=step.action_class_name,
                phase=step.phase,
                state=step.state,
            )
        if step.state in _DONE:
            steps, actions = self._start_steps(self.graph.complete(step_id))
        elif not skipping and self._retry_later(step):  # a failed skip is not retried
            self._send(steps=(step,), actions=changed, chunks=chunks)
            return
        else:
            self.graph.fail(step_id)
            steps, actions = [], []
        extra: dict[str, Any] = {"chunks": chunks}
        if step_id in self.had_events:  # events still queued die with the step
            self.had_events -= {step_id}
            extra["envelope_clear"] = ((self.plan.id, step_id),)
        self._commit_and_continue([step, *steps], [*changed, *actions], **extra)

    def _retry_later(self, step: Step) -> bool:
        """Arm a retry of a failed step if its action's policy allows one more attempt.

        The step stays in flight (``error``, counted in ``attempts``) while the clock waits
        out the backoff: no thread is held.
        """
        policy = step.action_class.rescue
        if not isinstance(policy, Retry) or step.attempts >= policy.attempts:
            return False
        if self.winding_down:
            return False
        step.attempts += 1
        delay = policy.delay(step.attempts)
        self.log.warning(
            "step failed, retrying",
            step_id=step.id,
            action_class=step.action_class_name,
            phase=step.phase,
            attempt=step.attempts,
            of=policy.attempts,
            backoff=delay,
            error=str(step.error),
        )
        me = self.actor_ref
        try:
            self.runtime.clock.schedule(delay, lambda: tell_if_alive(me, _RetryStep(step.id)))
        except ClockClosedError:  # the world is stopping: leave the step failed
            return False
        self.retrying |= {step.id}
        return True

    def _retry(self, step_id: int) -> None:
        if step_id not in self.retrying:  # wound down meanwhile
            return
        self.retrying -= {step_id}
        if self.plan.steps[step_id].phase == Phase.FINALIZE:
            self.finishing = False
            self._run_finalize_flow([], [])  # the finalize phase runs again from its start
            return
        if self.finishing:
            return
        self.running.discard(step_id)
        steps, actions = self._start_steps([step_id])
        self._commit_and_continue(steps, actions)

    def _suspended(self, step: Step, changed: list[ActionRecord], chunks: list[Any]) -> None:
        step.transition(StepState.SUSPENDED)
        if enabled(logging.DEBUG):
            self.log.debug("step suspended", step_id=step.id, action_class=step.action_class_name)
        child = self.children.get(step.id)
        me = self.actor_ref

        def on_commit(error: BaseException | None) -> None:
            if error is None and child is not None:
                tell_if_alive(child, Parked())
            me.tell(_StepParked(step.id))

        self._send(steps=(step,), actions=changed, chunks=chunks, on_commit=on_commit)

    def _step_parked(self, step_id: int) -> None:
        if self.plan.steps[step_id].state == StepState.SUSPENDED:
            self.parked.add(step_id)
            self._maybe_run_flow_finished()

    def _resume(self, message: Resume) -> None:
        step = self.plan.steps[message.step_id]
        child = self.children.get(message.step_id)
        if step.state != StepState.SUSPENDED or child is None:
            return
        self.parked.discard(step.id)
        step.transition(StepState.RUNNING)
        pop = ((self.plan.id, step.id),) if message.persisted else ()

        def on_commit(error: BaseException | None) -> None:
            if error is None:
                tell_if_alive(child, GoAhead())

        self._send(steps=(step,), envelope_pop=pop, on_commit=on_commit)

    # -- events --------------------------------------------------------------------------

    def _deliver(self, step_id: int, payload: Any, optional: bool, reply: Any) -> None:
        """Store an event for a running or suspended step, then hand it to its actor."""
        step = self.plan.steps.get(step_id)
        if step is None:
            reply.set_exception(UnknownStep(f"execution plan {self.plan.id} has no step {step_id}"))
            return
        if step.state not in _TAKES_EVENTS or step_id not in self.running or self.finishing:
            state = step.state
            if optional:
                reply.set_result(False)
            else:
                reply.set_exception(
                    EventRejected(
                        f"step {step_id} of execution plan {self.plan.id} is {state}, "
                        "not waiting for events"
                    )
                )
            return
        self.had_events |= {step_id}

        me = self.actor_ref

        def on_commit(error: BaseException | None) -> None:
            if error is not None:
                reply.set_exception(error)
                return
            me.tell(_EventStored(step_id, Event(payload, persisted=True)))
            reply.set_result(True)

        envelope = ((self.plan.id, step_id, encode_event(payload)),)
        self._send(envelope_add=envelope, on_commit=on_commit)

    def _cancel(self, message: CancelPlan) -> None:
        event = Abort() if message.force else Cancel()
        asked = 0
        for step_id in list(self.children):
            step = self.plan.steps[step_id]
            if step.state in _TAKES_EVENTS and is_cancellable(step.action_class):
                self._deliver(step_id, event, True, _Ignore())
                asked += 1
        message.reply.set_result(asked)

    @staticmethod
    def _stamp(step: Step) -> None:
        step.ended_at = utcnow()
        if step.started_at is not None:
            step.real_time = (step.ended_at - step.started_at).total_seconds()

    def _run_flow_over(self) -> bool:
        if self.finishing:
            return False
        if self.winding_down:  # parked steps stay suspended; running calls are awaited
            return not (self.running - self.parked - self.retrying)
        return not self.running and self.graph.is_done()

    def _maybe_run_flow_finished(self) -> None:
        if self._run_flow_over():
            self._after_run_flow([], [])

    def _after_run_flow(self, steps: list[Step], actions: list[ActionRecord], **extra: Any) -> None:
        if self.winding_down:
            self.retrying = _NONE  # their steps stay failed, to be resumed
            for child in self.children.values():  # parked steps: they stay suspended
                stop_if_alive(child)
            self.children.clear()
            state = PlanState.STOPPED if self.halting else PlanState.PAUSED
            self._finish(state, steps, actions, **extra)
        elif self.graph.is_complete():
            self._run_finalize_flow(steps, actions, **extra)
        else:
            strategy = self._rescue_strategy()
            if strategy is Skip:
                self._skip_failed_run_steps(steps, actions, **extra)
            else:
                state = PlanState.STOPPED if strategy is Fail else PlanState.PAUSED
                self._finish(state, steps, actions, **extra)

    def _rescue_strategy(self) -> Any:
        """Return the strategy to apply now: Pause unless auto-rescue may act.

        Each failed step is rescued once: a step that fails again after its rescue (its
        ``run(Skip)`` raised, say) pauses the plan, as in Dynflow.
        """
        if not self.runtime.auto_rescue:
            return Pause
        failed = {sid for sid, step in self.plan.steps.items() if step.state == StepState.ERROR}
        if not failed or failed & self.rescued:
            return Pause
        self.rescued |= frozenset(failed)
        strategy = plan_rescue_strategy(self.plan)
        self.log.info("rescuing plan", strategy=strategy.name)
        return strategy

    def _skip_failed_run_steps(
        self, steps: list[Step], actions: list[ActionRecord], **extra: Any
    ) -> None:
        """Skip every failed run step (and what depends on it) and go on with the flow."""
        changed = {step.id: step for step in steps}
        for step in self.plan.steps_of_phase(Phase.RUN):
            if step.state == StepState.ERROR:
                for skipped in skip_plan_steps(self.plan, step):
                    changed[skipped.id] = skipped
        self.graph = FlowGraph(self.plan.run_flow)
        done = [sid for sid, step in self.plan.steps.items() if step.state in _DONE]
        started, resolved = self._start_steps(self.graph.start(done))
        for step in started:
            changed[step.id] = step
        self._commit_and_continue(list(changed.values()), [*actions, *resolved], **extra)

    # -- finalize flow -------------------------------------------------------------------

    def _run_finalize_flow(
        self, steps: list[Step], actions: list[ActionRecord], **extra: Any
    ) -> None:
        finalize = [self.plan.steps[sid] for sid in self.plan.finalize_flow.all_step_ids()]
        finalize = [step for step in finalize if step.state != StepState.SKIPPED]
        if not finalize:
            self._finish(PlanState.STOPPED, steps, actions, **extra)
            return
        self.finishing = True
        self._pending_changes = (steps, actions, extra)
        snapshots = [copy.copy(step) for step in finalize]
        for step in snapshots:
            if step.state in (StepState.SUCCESS, StepState.ERROR):
                step.transition(StepState.PENDING)  # resume re-runs the whole finalize phase
        records = {s.action_id: copy.copy(self.plan.actions[s.action_id]) for s in snapshots}
        me = self.actor_ref

        def on_done(result: FinalizeDone | None, error: BaseException | None) -> None:
            if error is not None:  # the runner itself broke: fail the first step
                snapshots[0].state = StepState.ERROR
                snapshots[0].error = StepError.from_exception(error)
                result = FinalizeDone(tuple(snapshots), tuple(records.values()))
            me.tell(result)

        # Build the action objects here: a worker process imports their classes from the
        # pickles, while a stored class name would not resolve there.
        world = self.runtime.world_for_workers
        finalizers = {
            aid: new_action(record, FINALIZE, world=world) for aid, record in records.items()
        }
        args = (snapshots, records, finalizers)
        self.runtime.pool("default").submit(_run_finalize_steps, args, on_done)

    def _finalize_done(self, message: FinalizeDone) -> None:
        steps, actions, extra = self._pending_changes
        for step in message.steps:
            record = next(r for r in message.actions if r.id == step.action_id)
            stored = self.plan.actions[record.id]
            stored.output = record.output
            step.action = stored
            self.plan.steps[step.id] = step
            steps.append(step)
            actions.append(stored)
        if message.chunks:
            extra = {**extra, "chunks": (*extra.get("chunks", ()), *message.chunks)}
        failed = [step for step in message.steps if step.state == StepState.ERROR]
        if not failed:
            self._finish(PlanState.STOPPED, steps, actions, **extra)
            return
        if not self.halting and self._retry_later(failed[0]):  # the phase runs again later
            self._send(steps=steps, actions=actions, **extra)
            return
        strategy = self._rescue_strategy()
        if strategy is Skip:  # skip the failed finalize steps, run the phase again
            for step in failed:
                step.transition(StepState.SKIPPED)
            self.finishing = False
            self._run_finalize_flow(steps, actions, **extra)
            return
        state = PlanState.STOPPED if strategy is Fail else PlanState.PAUSED
        self._finish(state, steps, actions, **extra)

    # -- end -----------------------------------------------------------------------------

    def _finish(
        self, state: PlanState, steps: list[Step], actions: list[ActionRecord], **extra: Any
    ) -> None:
        self.finishing = True
        self.plan.transition(state, self.runtime.world_id)
        me = self.actor_ref
        self._send(
            steps=steps,
            actions=actions,
            plan_row=True,
            on_commit=lambda error: tell_and_run(me, Finished(error)),
            **extra,
        )

    def _finished(self, error: BaseException | None) -> None:
        if error is not None:
            self.log.error("final state not committed", error=str(error))
        else:
            if enabled(logging.INFO):
                self.log.info("plan finished", state=self.plan.state, result=self.plan.result)
        # Usually on the writer's reply thread (see `_finish`): the executor takes the news
        # there too if it is idle, instead of a dispatcher thread being woken for it.
        tell_and_run(self.executor, PlanDone(self.plan.id, self.plan, error))
        self.stop_now()

    def _send(
        self,
        steps: list[Step] | tuple[Step, ...] = (),
        actions: list[ActionRecord] | tuple[ActionRecord, ...] = (),
        plan_row: bool = False,
        claim: Claim | None = None,
        on_commit: Callable[[BaseException | None], object] | None = None,
        **extra: Any,
    ) -> None:
        message = changes(
            self.runtime.storage,
            plan=self.plan if plan_row else None,
            steps=steps,
            actions=actions,
            claim=claim,
            on_commit=on_commit,
            **extra,
        )
        tell(self.runtime.persistence, message)


@dataclass(frozen=True, slots=True)
class _StepParked:
    """The supervisor's own note: a step's suspended state is committed."""

    step_id: int


@dataclass(frozen=True, slots=True)
class _RetryStep:
    """The supervisor's own timer: a failed step's backoff is over."""

    step_id: int


@dataclass(frozen=True, slots=True)
class _EventStored:
    """The supervisor's own note: an event is stored; hand it to the step's actor."""

    step_id: int
    event: Event


class _Ignore:
    """A reply sink for events the supervisor sends itself (cancel)."""

    def set_result(self, value: Any) -> None:
        """Drop the answer."""

    def set_exception(self, error: BaseException) -> None:
        """Drop the answer."""


def _run_finalize_steps(
    steps: list[Step], records: dict[int, ActionRecord], actions: dict[int, Any]
) -> FinalizeDone:
    """Run finalize steps in order on a worker; stop at the first failure."""
    failed = False
    chunks: list[tuple[Any, ...]] = []
    for step in steps:
        if failed:
            break
        record = records[step.action_id]
        step.transition(StepState.RUNNING)
        step.started_at = step.started_at or utcnow()
        outcome = execute_finalize(actions[step.action_id])
        chunks.extend((record.execution_plan_id, record.id, *chunk) for chunk in outcome.chunks)
        step.transition(outcome.state)
        step.error = outcome.error
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        step.ended_at = utcnow()
        step.real_time = (step.ended_at - step.started_at).total_seconds()
        record.output = outcome.output
        failed = outcome.state == StepState.ERROR
    return FinalizeDone(tuple(steps), tuple(records.values()), tuple(chunks))
