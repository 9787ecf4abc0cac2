"""`InThreadWorld`: execute plans deterministically in the calling thread, on virtual time.

A test double for a world with an executor, after Dynflow's ``InThreadExecutor``. It drives
the engine's own execution core (`pydynflow.execution.PlanExecution`), so a plan goes the way
it would in a `World`; only the means differ: user code runs and each change is committed in
the calling thread, and timers wait on a `ManagedClock`, moved to the next timer when nothing
else is left (``auto_advance``). Plans are planned and stored by an ordinary client `World`,
so `InThreadWorld.load` reads what an executor would have stored.

Not thread-safe: use one from one thread. How to test with it: ``docs/guides/testing.md``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from functools import partial
from typing import Any

from pydynflow.action import Action, is_async_run
from pydynflow.actors.hook_runner import HookRunner
from pydynflow.actors.persistence import changes, request_of
from pydynflow.clock import ClockClosedError, Timer
from pydynflow.dispatch.operations import normalize_event
from pydynflow.errors import DynflowError, EventRejected, UnknownPlan, UnknownStep
from pydynflow.events import Abort, Cancel, Skip
from pydynflow.execution import Advance, NotRunnable, PlanExecution
from pydynflow.hooks import HookCalls, run_hook_calls
from pydynflow.logging import get_logger
from pydynflow.middleware import WorldMiddleware
from pydynflow.mixins import is_cancellable
from pydynflow.mixins.singleton import singleton_classes
from pydynflow.mixins.sub_plans import wake_caller
from pydynflow.outcome import failed_outcome
from pydynflow.phases import (
    FINALIZE,
    RUN,
    execute_finalize_flow,
    execute_run,
    execute_run_async,
    finalize_phase,
    new_action,
)
from pydynflow.plan import ExecutionPlan, StepError
from pydynflow.promise import Promise
from pydynflow.states import PlanState, StepState
from pydynflow.storage import Storage
from pydynflow.storage.singleton_lock import check_singleton_lock
from pydynflow.storage.writer import ThreadWriter
from pydynflow.testing.clock import ManagedClock
from pydynflow.testing.scheduling import InThreadScheduling
from pydynflow.triggered import Triggered
from pydynflow.world import World

__all__ = ["InThreadTriggered", "InThreadWorld"]

_MAX_TIMERS_PER_PUMP = 100_000  # a timer that keeps re-arming itself must not hang a test


class _Execution:
    """One plan being executed: its core, the events waiting for its steps, its timers."""

    def __init__(self, core: PlanExecution) -> None:
        self.core = core
        self.plan = core.plan
        self.inbox: dict[int, deque[tuple[Any, bool]]] = {}  # step id -> (event, persisted)
        self.waking: dict[int, Any] = {}  # parked step id -> the event it wakes up with
        self.timers: list[Timer] = []
        self.future: Promise[ExecutionPlan] = Promise()
        self.finished = False
        self.singletons = singleton_classes(self.plan)  # its steps' locks are checked

    def suspended(self) -> list[int]:
        """Return the ids of the suspended steps, in order."""
        return sorted(self.core.parked)

    def cancel_timers(self) -> None:
        """Cancel every timer armed for this plan."""
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class _InlineHooks(HookRunner):
    """Run execution-plan hooks at once, in the calling thread (as everything here runs)."""

    def submit(self, calls: HookCalls) -> None:
        """Run the hooks of one commit now."""
        run_hook_calls(calls, self.log)


class InThreadTriggered(Triggered):
    """What `InThreadWorld.trigger` and `InThreadWorld.execute` return.

    The execution has usually ended when it is returned. It has not if a suspended step
    waits for an event only `InThreadWorld.event` can bring; `wait` then raises instead of
    blocking forever, since nothing else would ever go on with the plan.
    """

    def __init__(
        self,
        plan_id: str,
        future: Promise[ExecutionPlan],
        *,
        planned: bool = True,
        error: StepError | None = None,
        execution: _Execution | None = None,
        present: Any = None,
    ) -> None:
        """Wrap ``future``, resolved when the execution ends."""
        super().__init__(plan_id, future, planned=planned, error=error, present=present)
        self._execution = execution

    def wait(self, timeout: float | None = None) -> ExecutionPlan:
        """Return the plan as its execution ended.

        Raises:
            DynflowError: the plan could not be executed, or it is still running, with
                suspended steps waiting for events (send them with `InThreadWorld.event`).
        """
        if not self.future.done():
            waiting = self._execution.suspended() if self._execution is not None else []
            raise DynflowError(
                f"execution plan {self.id} has not finished: steps {waiting} are suspended "
                "waiting for events; send them with InThreadWorld.event()"
            )
        return super().wait(timeout)


class InThreadWorld(InThreadScheduling):
    """A world whose plans run deterministically in the calling thread.

    Args:
        db: the database plans are stored in (in memory by default).
        clock: the virtual clock timers are armed on; a new `ManagedClock` by default.
            Available as ``world.clock``.
        auto_advance: when only timers are left, move ``clock`` to the next one and go on.
            With False, an execution stops there; the test moves the clock itself
            (``world.clock.advance(...)``), which runs what the timers deliver.
        **world_kwargs: more arguments of the client `World` (``auto_rescue``,
            ``name``...); not ``executor``.

    `trigger` and `execute` return once the execution has ended (or can go no further).
    Steps get this world as ``action.world``: ``suspended_ref.send``, ``world.event`` and
    ``world.trigger`` called from user code are queued and processed in turn.
    """

    def __init__(
        self,
        db: str = "sqlite:///:memory:",
        *,
        clock: ManagedClock | None = None,
        auto_advance: bool = True,
        **world_kwargs: Any,
    ) -> None:
        """Open the client world's storage; nothing runs until a plan is executed."""
        if "executor" in world_kwargs:
            raise ValueError("InThreadWorld executes plans itself: do not pass executor")
        self.clock: ManagedClock = clock if clock is not None else ManagedClock()
        """The virtual clock of the timers (retries, ``plan_event`` delays, timeouts)."""
        self.auto_advance = auto_advance
        world_kwargs.setdefault("create", True)  # it executes plans: a new database is fine
        self.client = World(db, executor=False, clock=self.clock, **world_kwargs)
        """The client `World` that plans and stores the plans (not started)."""
        self.client._hooks = _InlineHooks(self.client.log)  # its plans' hooks run here too
        self._own_clock = clock is None
        self._writer = ThreadWriter(self.client.storage)
        self._executions: dict[str, _Execution] = {}
        self._work: deque[tuple[Any, ...]] = deque()
        self._pumping = False
        self._stopped = False
        self.log = get_logger(world_id=self.client.id, world=self.client.name)

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> InThreadWorld:
        """Return the world itself (nothing to start)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """`stop` the world."""
        self.stop()

    @property
    def storage(self) -> Storage:
        """The `Storage` plans are kept in."""
        return self.client.storage

    @property
    def middleware(self) -> WorldMiddleware:
        """The world's middleware (``middleware=`` given to it; ``use`` adds more)."""
        return self.client.middleware

    def stop(self) -> None:
        """Cancel the timers of unfinished executions and close the storage (idempotent).

        Plans still running stay ``running`` in storage; the clock is closed if it is ours.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop_scheduling()
        for execution in self._executions.values():
            execution.cancel_timers()
        self._executions.clear()
        self._work.clear()
        self.client.stop()
        if self._own_clock:
            self.clock.close()

    # -- planning and execution ----------------------------------------------------------

    def plan(self, action_class: type[Action], *args: Any, **kwargs: Any) -> ExecutionPlan:
        """Plan ``action_class(*args, **kwargs)`` and store the plan (see `World.plan`)."""
        self._check_open("plan")
        return self.client.plan(action_class, *args, **kwargs)

    def trigger(self, action_class: type[Action], *args: Any, **kwargs: Any) -> Triggered:
        """Plan ``action_class(*args, **kwargs)`` and execute it here, now.

        Returns once the execution has ended (see `InThreadTriggered`); if planning failed,
        ``.planned`` is False and ``.error`` says why. Called from a step (a sub-plan), the
        execution is queued instead and runs after the current step.
        """
        return self.trigger_with_caller(action_class, args, kwargs)

    def trigger_with_caller(
        self,
        action_class: type[Action],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        caller_action: Action | None = None,
    ) -> Triggered:
        """`trigger` with the ``caller_action`` whose sub-plan this is (`WithSubPlans`)."""
        self._check_open("trigger")
        plan = self.client.plan_with_options(
            action_class, args=args, kwargs=kwargs, caller_action=caller_action
        )
        if plan.state != PlanState.PLANNED:
            future: Promise[ExecutionPlan] = Promise()
            future.set_result(plan)
            return InThreadTriggered(
                plan.id,
                future,
                planned=False,
                error=plan.error,
                present=self.client._present_shared,
            )
        return self._start(plan)

    def execute(self, plan_id: str) -> Triggered:
        """Execute a ``planned`` or ``paused`` plan here, now (a paused one: `resume`).

        ``.wait()`` raises if it cannot run (unknown, already running, stopped).
        """
        self._check_open("execute")
        future: Promise[ExecutionPlan] = Promise()
        if plan_id in self._executions:
            future.set_exception(DynflowError(f"execution plan {plan_id} is already running"))
            return InThreadTriggered(plan_id, future)
        try:
            plan = self.client._stored(plan_id)
        except UnknownPlan as exc:
            future.set_exception(exc)
            return InThreadTriggered(plan_id, future)
        return self._start(plan, resume=True)

    def resume(self, plan_id: str) -> Triggered:
        """Run a paused plan again: its failed steps, then its finalize phase (`execute`)."""
        return self.execute(plan_id)

    def skip(self, plan_id: str, step_id: int) -> None:
        """Skip a failed run step of a paused plan (see `World.skip`); then `resume` it."""
        self._check_open("skip")
        self.client.skip(plan_id, step_id)

    def event(
        self,
        plan_id: str,
        step_id: int,
        payload: Any,
        optional: bool = False,
        event_id: str | None = None,
    ) -> bool:
        """Send ``payload`` to a step; a suspended one runs now.

        Returns True once the event is processed (or queued, when called from a step).
        ``event_id``: chosen by the sender; the same id again for the same step returns
        True and is not applied again.

        Raises:
            UnknownPlan: no plan has this id.
            UnknownStep: the plan has no step with this id.
            EventRejected: the step cannot take events here (with ``optional``: return
                False instead).
            SerializationError: ``payload`` is not JSON-serialisable.
        """
        self._check_open("event")
        payload = normalize_event(payload)
        execution = self._executions.get(plan_id)
        if execution is None:
            self._check_step(plan_id, step_id)
            if event_id is not None and (step_id, event_id) in self.storage.chosen_event_ids(
                plan_id
            ):
                return True  # applied before
            if optional:
                return False
            state = self.storage.step_state(plan_id, step_id)
            raise EventRejected(
                f"step {step_id} of execution plan {plan_id} is {state}, and its plan is not "
                "running in this world: not waiting for events"
            )
        try:
            advance = execution.core.accept_event(
                step_id, event_id or uuid.uuid4().hex, payload, event_id is not None
            )
        except EventRejected:
            if optional:
                return False
            raise
        if advance is None:  # its sender sent it before: applied once
            return True
        self._commit(execution, advance)
        self._work.append(("event", execution, step_id, payload))
        self._pump()
        return True

    def cancel(self, plan_id: str, force: bool = False) -> int:
        """Send `Cancel` (``force``: `Abort`) to every active `Cancellable` step of a plan.

        Returns how many steps were asked (0: nothing could be cancelled).
        """
        self._check_open("cancel")
        execution = self._executions.get(plan_id)
        if execution is None:
            self._check_step(plan_id, None)
            return 0
        event = Abort() if force else Cancel()
        asked = 0
        for step_id in sorted(execution.core.active):
            step = execution.plan.steps[step_id]
            if is_cancellable(step.action_class) and execution.core.takes_events(step):
                advance = execution.core.accept_event(step_id, uuid.uuid4().hex, event)
                assert advance is not None  # a fresh id is never a repeat
                self._commit(execution, advance)
                self._work.append(("event", execution, step_id, event))
                asked += 1
        self._pump()
        return asked

    # -- reading -------------------------------------------------------------------------

    def load(self, plan_id: str) -> ExecutionPlan:
        """Load a plan from storage (as last stored); raise `UnknownPlan` if there is none."""
        self._check_open("load")
        return self.client.load(plan_id)

    def plans(self, *args: Any, **kwargs: Any) -> list[ExecutionPlan]:
        """List stored plans, filtered, ordered and paged (see `World.plans`)."""
        self._check_open("plans")
        return self.client.plans(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<InThreadWorld now={self.clock.now()} running={sorted(self._executions)}>"

    # -- internals: driving the core -----------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._stopped:
            raise DynflowError(f"{what}: this InThreadWorld was stopped")

    def _check_step(self, plan_id: str, step_id: int | None) -> None:
        if self.storage.step_state(plan_id, step_id) is None:
            if step_id is None or not self.storage.plan_exists(plan_id):
                raise UnknownPlan(f"no execution plan has id {plan_id}")
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")

    def _start(self, plan: ExecutionPlan, *, resume: bool = False) -> InThreadTriggered:
        plan.world = self.client
        core = PlanExecution(plan, self.client.id, auto_rescue=self.client.auto_rescue)
        core.chosen_ids = self.storage.chosen_event_ids(plan.id)
        stored = self.storage.envelopes(plan.id, with_event_ids=True)
        try:
            advance = core.begin(
                resume=resume, stored_events=[(sid, eid) for _, sid, _, eid in stored]
            )
        except NotRunnable as exc:
            future: Promise[ExecutionPlan] = Promise()
            future.set_exception(exc)
            return InThreadTriggered(plan.id, future)
        execution = _Execution(core)
        for _, step_id, payload, _ in stored:
            execution.inbox.setdefault(step_id, deque()).append((payload, True))
        self._executions[plan.id] = execution
        self.log.info("plan started", plan_id=plan.id, label=plan.label)
        self._apply(execution, advance)
        self._pump()
        return InThreadTriggered(
            plan.id, execution.future, execution=execution, present=self.client._present_shared
        )

    def _apply(self, execution: _Execution, advance: Advance) -> None:
        """Carry out a decision: every wanted step gets its worker at once; commit; act."""
        core = execution.core
        wanted, advance.want = advance.want, []
        for step_id in wanted:
            core.granted(step_id, advance)
        self._commit(execution, advance)
        for step_id in advance.parked:
            self._parked(execution, step_id)
        for step_id in advance.launch:
            refusal = None
            if step_id in execution.waking:
                event = execution.waking.pop(step_id)
            elif execution.plan.steps[step_id].state == StepState.SKIPPING:
                event = Skip()
            else:
                event = None
                if execution.singletons:
                    refusal = self._singleton_refusal(execution, step_id)
            self._work.append(("run", execution, step_id, event, refusal))
        for step_id, delay in advance.retry:
            self._arm(execution, delay, ("retry", execution, step_id))
        if advance.finalize:
            self._work.append(("finalize", execution))
        if advance.finished:
            self._finished(execution)

    def _commit(self, execution: _Execution, advance: Advance) -> None:
        if not advance.has_changes():
            return
        message = changes(
            self.storage,
            plan=execution.plan if advance.plan_row else None,
            steps=advance.steps,
            actions=advance.actions,
            chunks=advance.chunks,
            envelope_add=tuple(advance.envelope_add),
            envelope_pop=tuple(advance.envelope_pop),
            envelope_clear=tuple(advance.envelope_clear),
        )
        self._writer.write([request_of(message)])
        if message.hooks is not None:
            run_hook_calls(message.hooks, self.log)
            if message.hooks.caller is not None:
                wake_caller(self, message.hooks)

    def _pump(self, advance: bool | None = None) -> None:
        """Process queued work until none is left; with ``advance``, also move the clock
        while running plans wait for their timers. Does nothing when called from inside."""
        if self._pumping:
            return
        advance = self.auto_advance if advance is None else advance
        self._pumping = True
        try:
            fired = 0
            while True:
                if self._work:
                    self._process(self._work.popleft())
                    continue
                if not advance or self._next_timer() is None:
                    break
                fired += 1
                if fired > _MAX_TIMERS_PER_PUMP:
                    raise RuntimeError(
                        f"{_MAX_TIMERS_PER_PUMP} timers fired and plans are still waiting "
                        f"for theirs: {sorted(self._executions)} (a timer that keeps re-arming?)"
                    )
                self.clock.advance_to_next()
        finally:
            self._pumping = False

    def _next_timer(self) -> Timer | None:
        """The earliest pending timer armed for a running plan."""
        pending = [t for e in self._executions.values() for t in e.timers if t.pending]
        return min(pending, key=lambda timer: timer.due, default=None)

    def _process(self, work: tuple[Any, ...]) -> None:
        kind, execution = work[0], work[1]
        if execution.finished:
            return  # work for a plan that ended is dropped
        if kind == "run":
            self._run_step(execution, work[2], work[3], work[4])
        elif kind == "event":  # stored (accepted through the core)
            self._deliver(execution, work[2], work[3], persisted=True)
        elif kind == "timer-event":
            self._deliver(execution, work[2], work[3], persisted=False)
        elif kind == "retry":
            self._apply(execution, execution.core.retry_due(work[2]))
        elif kind == "finalize":
            self._run_finalize(execution)

    def _arm(self, execution: _Execution, delay: float, work: tuple[Any, ...]) -> None:
        execution.timers = [timer for timer in execution.timers if timer.pending]
        with suppress(ClockClosedError):  # the world is stopping: lost, as in the engine
            execution.timers.append(self.clock.schedule(delay, partial(self._fire, work)))

    def _fire(self, work: tuple[Any, ...]) -> None:
        self._work.append(work)
        self._pump(advance=False)

    # -- internals: steps ----------------------------------------------------------------

    def _singleton_refusal(self, execution: _Execution, step_id: int) -> Exception | None:
        """Return why a `Singleton` step must not run (see `World`'s plan supervisor)."""
        name = execution.plan.steps[step_id].action_class_name
        if name not in execution.singletons:
            return None
        try:
            return check_singleton_lock(self.storage, name, execution.plan.id, self.client.id)
        except DynflowError as exc:
            return exc

    def _run_step(
        self, execution: _Execution, step_id: int, event: Any, refusal: Exception | None = None
    ) -> None:
        plan = execution.plan
        step = plan.steps[step_id]
        record = plan.actions[step.action_id]
        action = new_action(record, RUN, world=self, middleware=self.client.middleware)
        action.error = step.error
        if refusal is not None:  # a Singleton whose plan lost its lock: its code does not run
            outcome = failed_outcome(refusal)
        elif is_async_run(type(action)):
            outcome = asyncio.run(execute_run_async(action, event, attempt=step.attempts))
        else:
            outcome = execute_run(action, event, attempt=step.attempts)
        advance = Advance()
        execution.core.outcome(step_id, outcome, advance)
        if outcome.state == StepState.SUSPENDED:
            for payload, delay in outcome.events:
                if delay is None:
                    execution.inbox.setdefault(step_id, deque()).append((payload, False))
                else:
                    self._arm(execution, delay, ("timer-event", execution, step_id, payload))
        else:
            execution.inbox.pop(step_id, None)  # its events die with it (recorded if stored)
        self._apply(execution, advance)
        if outcome.suspend_callback is not None:
            try:
                outcome.suspend_callback(action.suspended_ref)
            except Exception as exc:  # as the engine: logged, the step stays parked
                self.log.error("suspend callback failed", plan_id=plan.id, error=repr(exc))

    def _deliver(self, execution: _Execution, step_id: int, payload: Any, persisted: bool) -> None:
        """Queue an event for a step; wake it if it is parked."""
        execution.inbox.setdefault(step_id, deque()).append((payload, persisted))
        if step_id in execution.core.parked:
            self._parked(execution, step_id)

    def _parked(self, execution: _Execution, step_id: int) -> None:
        """A step is parked: if an event waits for it, run it with that event."""
        inbox = execution.inbox.get(step_id)
        if not inbox:
            return
        payload, persisted = inbox.popleft()
        execution.waking[step_id] = payload
        self._apply(execution, execution.core.wake(step_id, persisted))

    def _run_finalize(self, execution: _Execution) -> None:
        steps, records = execution.core.finalize_work()
        middleware = self.client.middleware
        finalizers = {
            aid: new_action(r, FINALIZE, world=self, middleware=middleware)
            for aid, r in records.items()
        }
        phase = finalize_phase(middleware, execution.plan, steps, records, self)
        done = execute_finalize_flow(steps, records, finalizers, *phase)
        self._apply(execution, execution.core.finalize_done(done.steps, done.actions, done.chunks))

    def _finished(self, execution: _Execution) -> None:
        plan = execution.plan
        execution.finished = True
        execution.cancel_timers()
        self._executions.pop(plan.id, None)
        self.log.info(
            "plan finished", plan_id=plan.id, state=str(plan.state), result=str(plan.result)
        )
        execution.future.set_result(plan)
        self.run_due()  # the plans chained after it, if it was their last prerequisite
