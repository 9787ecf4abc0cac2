"""`InThreadWorld`: execute plans deterministically in the calling thread, on virtual time.

A test double for a world with an executor, after Dynflow's ``InThreadExecutor``. Plans are
planned and stored by an ordinary client `World` (``executor=False``, not started: it writes
to its storage directly), so `InThreadWorld.load` reads what an executor would have stored.
Execution needs no actor, thread or real clock: the run flow is walked step by step with
`FlowGraph`, each step's user code runs in the calling thread, and suspended steps wait on a
`ManagedClock` (``world.clock``).

Work is processed in order (first in, first out): steps as they become ready, and events
as they are sent. When nothing is left to do but some steps are suspended, time moves to the
next timer one of them armed (``auto_advance``), so a polling action or a timeout completes
at once, whatever the delays. Timers others armed on the clock fire too when time passes
them, and are otherwise left alone. A plan whose suspended steps wait for an event nobody
will send stays running: `InThreadWorld.event` delivers it later.

Not thread-safe: use one from one thread. ``async def run`` is awaited on a new event loop;
``wait_for_event`` is not available in-thread (the step fails with a `DynflowError`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydynflow.action import Action
from pydynflow.clock import ClockClosedError, Timer
from pydynflow.errors import DynflowError, EventRejected, UnknownPlan, UnknownStep
from pydynflow.events import Abort, Cancel, Skip, is_cancellable
from pydynflow.logging import get_logger
from pydynflow.phases import (
    FINALIZE,
    RUN,
    PhaseOutcome,
    execute_finalize,
    execute_run,
    execute_run_async,
    is_async_run,
    new_action,
    run_accepts_event,
)
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.promise import Promise
from pydynflow.references import has_references, resolve_references
from pydynflow.scheduling import FlowGraph
from pydynflow.states import PlanState, StepState
from pydynflow.storage import Storage
from pydynflow.testing.clock import ManagedClock
from pydynflow.triggered import Triggered
from pydynflow.world import World, normalize_event

__all__ = ["InThreadTriggered", "InThreadWorld"]

_RUNNABLE = (StepState.PENDING, StepState.ERROR, StepState.SKIPPING, StepState.SUSPENDED)
_TAKES_EVENTS = (StepState.RUNNING, StepState.SUSPENDED)
_DONE = (StepState.SUCCESS, StepState.SKIPPED)
_MAX_TIMERS_PER_PUMP = 100_000  # a timer that keeps re-arming itself must not hang a test


class _Execution:
    """One plan being executed: its flow bookkeeping, active steps and their timers."""

    def __init__(self, plan: ExecutionPlan) -> None:
        self.plan = plan
        self.graph = FlowGraph(plan.run_flow)
        self.active: set[int] = set()  # started and not finished: running or suspended
        self.timers: dict[int, list[Timer]] = {}  # step id -> timers its runs armed
        self.future: Promise[ExecutionPlan] = Promise()
        self.finished = False

    def suspended(self) -> list[int]:
        """Return the ids of the suspended steps, in order."""
        steps = self.plan.steps
        return sorted(sid for sid in self.active if steps[sid].state == StepState.SUSPENDED)

    def cancel_timers(self, step_id: int | None = None) -> None:
        """Cancel the timers of one step (of every step with None)."""
        ids = list(self.timers) if step_id is None else [step_id]
        for sid in ids:
            for timer in self.timers.pop(sid, ()):
                timer.cancel()


@dataclass(frozen=True, slots=True)
class _Work:
    """One unit of work: run a step that became ready, deliver an event, or check the end."""

    execution: _Execution
    kind: str  # "start", "event" or "check"
    step_id: int = 0
    event: Any = None


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
    ) -> None:
        """Wrap ``future``, resolved when the execution ends."""
        super().__init__(plan_id, future, planned=planned, error=error)
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


class InThreadWorld:
    """A world whose plans run deterministically in the calling thread.

    Args:
        db: the database plans are stored in (in memory by default).
        clock: the virtual clock steps arm their timers on; a new `ManagedClock` by
            default. Available as ``world.clock``.
        auto_advance: when only suspended steps are left, move ``clock`` to their next
            timer and go on. With False, an execution stops there; the test moves the clock
            itself (``world.clock.advance(...)``), which runs what the timers deliver.
        **world_kwargs: more arguments of the client `World` (``name``...); not
            ``executor``.

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
        """The virtual clock of the timers (``plan_event`` delays, timeouts, polling)."""
        self.auto_advance = auto_advance
        self.client = World(db, executor=False, clock=self.clock, **world_kwargs)
        """The client `World` that plans and stores the plans (not started)."""
        self._own_clock = clock is None
        self._executions: dict[str, _Execution] = {}
        self._work: deque[_Work] = deque()
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

    def stop(self) -> None:
        """Cancel the timers of unfinished executions and close the storage (idempotent).

        Plans still running stay ``running`` in storage; the clock is closed if it is ours.
        """
        if self._stopped:
            return
        self._stopped = True
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
        plan = self.plan(action_class, *args, **kwargs)
        if plan.state != PlanState.PLANNED:
            future: Promise[ExecutionPlan] = Promise()
            future.set_result(plan)
            return InThreadTriggered(plan.id, future, planned=False, error=plan.error)
        return self._start(plan)

    def execute(self, plan_id: str) -> Triggered:
        """Execute a ``planned`` or ``paused`` plan here, now.

        ``.wait()`` raises if it cannot run (unknown, already running, stopped).
        """
        self._check_open("execute")
        future: Promise[ExecutionPlan] = Promise()
        if plan_id in self._executions:
            future.set_exception(DynflowError(f"execution plan {plan_id} is already running"))
            return InThreadTriggered(plan_id, future)
        try:
            plan = self.client.load(plan_id)
        except UnknownPlan as exc:
            future.set_exception(exc)
            return InThreadTriggered(plan_id, future)
        if plan.state not in (PlanState.PLANNED, PlanState.PAUSED):
            future.set_exception(
                DynflowError(f"execution plan {plan_id} is {plan.state}, not runnable")
            )
            return InThreadTriggered(plan_id, future)
        return self._start(plan)

    def resume(self, plan_id: str) -> Triggered:
        """Run a paused plan again: its failed steps, then its finalize phase (`execute`)."""
        return self.execute(plan_id)

    def skip(self, plan_id: str, step_id: int) -> None:
        """Skip a failed run step of a paused plan (see `World.skip`); then `resume` it."""
        self._check_open("skip")
        self.client.skip(plan_id, step_id)

    def event(self, plan_id: str, step_id: int, payload: Any, optional: bool = False) -> bool:
        """Send ``payload`` to a suspended (or running) step; a suspended one runs now.

        Returns True once the event is processed (or queued, when called from a step).

        Raises:
            UnknownPlan: no plan has this id.
            UnknownStep: the plan has no step with this id.
            EventRejected: the step is not waiting for events here (with ``optional``:
                return False instead).
            SerializationError: ``payload`` is not JSON-serialisable.
        """
        self._check_open("event")
        payload = normalize_event(payload)
        execution = self._executions.get(plan_id)
        step = execution.plan.steps.get(step_id) if execution is not None else None
        if execution is None or step is None:
            self._check_step(plan_id, step_id)
        if (
            execution is None
            or step is None
            or step.state not in _TAKES_EVENTS
            or step_id not in execution.active
        ):
            if optional:
                return False
            state = self.storage.step_state(plan_id, step_id) if step is None else step.state
            raise EventRejected(
                f"step {step_id} of execution plan {plan_id} is {state}, not waiting for "
                "events in this world"
            )
        self._work.append(_Work(execution, "event", step_id, payload))
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
        for step_id in sorted(execution.active):
            step = execution.plan.steps[step_id]
            if step.state in _TAKES_EVENTS and is_cancellable(step.action_class):
                self._work.append(_Work(execution, "event", step_id, event))
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

    # -- internals: the work loop --------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._stopped:
            raise DynflowError(f"{what}: this InThreadWorld was stopped")

    def _check_step(self, plan_id: str, step_id: int | None) -> None:
        if self.storage.step_state(plan_id, step_id) is None:
            if step_id is None or not self.storage.plan_exists(plan_id):
                raise UnknownPlan(f"no execution plan has id {plan_id}")
            raise UnknownStep(f"execution plan {plan_id} has no step {step_id}")

    def _start(self, plan: ExecutionPlan) -> InThreadTriggered:
        plan.world = self.client
        plan.transition(PlanState.RUNNING, self.client.id)
        execution = _Execution(plan)
        self._executions[plan.id] = execution
        done = [sid for sid, step in plan.steps.items() if step.state in _DONE]
        steps, actions = self._ready(execution, execution.graph.start(done))
        self._save(execution, steps, actions, plan_row=True)
        self._work.append(_Work(execution, "check"))
        self.log.info("plan started", plan_id=plan.id, label=plan.label)
        self._pump()
        return InThreadTriggered(plan.id, execution.future, execution=execution)

    def _pump(self, advance: bool | None = None) -> None:
        """Process queued work until none is left; with ``advance``, also move the clock
        while suspended steps wait for their timers. Does nothing when called from inside."""
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
        """The earliest pending timer armed by a suspended step of a running plan."""
        best: Timer | None = None
        for execution in self._executions.values():
            steps = execution.plan.steps
            for step_id, timers in execution.timers.items():
                if steps[step_id].state != StepState.SUSPENDED:
                    continue
                for timer in timers:
                    if timer.pending and (best is None or timer.due < best.due):
                        best = timer
        return best

    def _process(self, work: _Work) -> None:
        execution = work.execution
        if execution.finished:
            return  # events for a plan that ended are dropped
        if work.kind == "start":
            self._run_step(execution, work.step_id, work.event)
        elif work.kind == "event":
            step = execution.plan.steps[work.step_id]
            if work.step_id in execution.active and step.state == StepState.SUSPENDED:
                self._run_step(execution, work.step_id, work.event)
            # else: the step finished meanwhile; the engine drops such events too
        self._maybe_finish(execution)

    def _timer_fired(self, execution: _Execution, step_id: int, payload: Any) -> None:
        self._work.append(_Work(execution, "event", step_id, payload))
        self._pump(advance=False)

    # -- internals: steps ----------------------------------------------------------------

    def _ready(
        self, execution: _Execution, step_ids: Iterable[int]
    ) -> tuple[list[Step], list[ActionRecord]]:
        """Move ready steps to ``running`` (as the engine does) and queue their first run."""
        plan = execution.plan
        steps: list[Step] = []
        actions: list[ActionRecord] = []
        ready = list(step_ids)
        while ready:
            step_id = ready.pop(0)
            step = plan.steps[step_id]
            record = plan.actions[step.action_id]
            steps.append(step)
            if step.state not in _RUNNABLE:
                self._fail(
                    execution, step, DynflowError(f"step {step_id} cannot run from {step.state}")
                )
                continue
            if step.state == StepState.SKIPPING and not run_accepts_event(record.action_class):
                step.transition(StepState.SKIPPED)
                _stamp(step)
                ready.extend(execution.graph.complete(step_id))
                continue
            if step.state != StepState.SKIPPING:
                if has_references(record.input):
                    try:
                        record.input = resolve_references(
                            record.input, lambda action_id: plan.actions[action_id].output
                        )
                    except DynflowError as exc:
                        self._fail(execution, step, exc)
                        continue
                    actions.append(record)
                step.transition(StepState.RUNNING)
            if step.started_at is None:
                step.started_at = utcnow()
            execution.active.add(step_id)
            event = Skip() if step.state == StepState.SKIPPING else None
            self._work.append(_Work(execution, "start", step_id, event))
        return steps, actions

    @staticmethod
    def _fail(execution: _Execution, step: Step, exc: BaseException) -> None:
        step.state = StepState.ERROR  # bypasses the table: the step never started
        step.error = StepError.from_exception(exc)
        execution.graph.fail(step.id)

    def _run_step(self, execution: _Execution, step_id: int, event: Any) -> None:
        plan = execution.plan
        step = plan.steps[step_id]
        record = plan.actions[step.action_id]
        if step.state == StepState.SUSPENDED:  # an event wakes it
            step.transition(StepState.RUNNING)
        action = new_action(record, RUN, world=self)
        if is_async_run(type(action)):
            outcome = asyncio.run(execute_run_async(action, event))
        else:
            outcome = execute_run(action, event)
        self._step_outcome(execution, step, record, action, outcome)

    def _step_outcome(
        self,
        execution: _Execution,
        step: Step,
        record: ActionRecord,
        action: Action,
        outcome: PhaseOutcome,
    ) -> None:
        plan = execution.plan
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        record.output = outcome.output
        if outcome.chunks:
            self.storage.add_output_chunks(
                [(plan.id, record.id, *chunk) for chunk in outcome.chunks]
            )
        if outcome.state == StepState.SUSPENDED:
            step.transition(StepState.SUSPENDED)
            self._save(execution, [step], [record])
            for payload, delay in outcome.events:
                if delay is None:
                    self._work.append(_Work(execution, "event", step.id, payload))
                else:
                    self._arm(execution, step.id, delay, payload)
            if outcome.suspend_callback is not None:
                try:
                    outcome.suspend_callback(action.suspended_ref)
                except Exception as exc:  # as the engine: logged, the step stays parked
                    self.log.error("suspend callback failed", plan_id=plan.id, error=repr(exc))
            return
        execution.active.discard(step.id)
        execution.cancel_timers(step.id)
        skipping = step.state == StepState.SKIPPING
        if outcome.state == StepState.SUCCESS:
            step.transition(StepState.SKIPPED if skipping else StepState.SUCCESS)
            step.error = None
        else:
            step.transition(StepState.ERROR)
            step.error = outcome.error
        _stamp(step)
        steps, actions = [step], [record]
        if step.state in _DONE:
            more_steps, more_actions = self._ready(execution, execution.graph.complete(step.id))
            steps += more_steps
            actions += more_actions
        else:
            execution.graph.fail(step.id)
        self._save(execution, steps, actions)

    def _arm(self, execution: _Execution, step_id: int, delay: float, payload: Any) -> None:
        timers = [timer for timer in execution.timers.get(step_id, ()) if timer.pending]
        callback = partial(self._timer_fired, execution, step_id, payload)
        with suppress(ClockClosedError):  # the world is stopping: lost, as in the engine
            timers.append(self.clock.schedule(delay, callback))
        execution.timers[step_id] = timers

    # -- internals: the end ----------------------------------------------------------------

    def _maybe_finish(self, execution: _Execution) -> None:
        if execution.finished or not execution.graph.is_done():
            return
        plan = execution.plan
        if execution.graph.is_complete():
            state = self._run_finalize_flow(execution)
        else:
            state = PlanState.PAUSED
        execution.finished = True
        execution.cancel_timers()
        plan.transition(state, self.client.id)
        self.storage.save_plan(plan)
        self._executions.pop(plan.id, None)
        self.log.info("plan finished", plan_id=plan.id, state=str(state), result=str(plan.result))
        execution.future.set_result(plan)

    def _run_finalize_flow(self, execution: _Execution) -> PlanState:
        """Run the finalize steps in order; stop at the first failure."""
        plan = execution.plan
        steps = [plan.steps[sid] for sid in plan.finalize_flow.all_step_ids()]
        steps = [step for step in steps if step.state != StepState.SKIPPED]
        for step in steps:
            if step.state in (StepState.SUCCESS, StepState.ERROR):
                step.transition(StepState.PENDING)  # resume re-runs the whole finalize phase
        for step in steps:
            record = plan.actions[step.action_id]
            step.transition(StepState.RUNNING)
            step.started_at = step.started_at or utcnow()
            outcome = execute_finalize(new_action(record, FINALIZE, world=self))
            step.transition(outcome.state)
            step.error = outcome.error
            step.execution_time += outcome.execution_time
            step.progress_done = outcome.progress
            _stamp(step)
            record.output = outcome.output
            if outcome.chunks:
                self.storage.add_output_chunks(
                    [(plan.id, record.id, *chunk) for chunk in outcome.chunks]
                )
            if outcome.state == StepState.ERROR:
                return PlanState.PAUSED
        return PlanState.STOPPED

    def _save(
        self,
        execution: _Execution,
        steps: Sequence[Step],
        actions: Sequence[ActionRecord],
        *,
        plan_row: bool = False,
    ) -> None:
        storage = self.storage
        with storage.transaction():
            if plan_row:
                storage.save_plan_row(execution.plan)
            storage.save_actions(actions)
            storage.save_steps(steps)


def _stamp(step: Step) -> None:
    step.ended_at = utcnow()
    if step.started_at is not None:
        step.real_time = (step.ended_at - step.started_at).total_seconds()
