"""`StepActor`: one per running or suspended step; runs the user code and carries its events.

Its supervisor has already made the step's move to ``running`` durable when the actor is
built, and a worker of the step's queue is free for it (so after a crash such a step is
found ``running`` and rescued as "Abnormal termination", never re-run blindly). The actor
hands the user code to that worker (or the world's asyncio loop for ``async def run``) and
sends each outcome to the supervisor, which commits it. A step that suspends stays alive
holding no thread: its mailbox carries the events sent to it. An event that arrives while
the code runs waits in the queue and is delivered, one at a time and in order, once the
step is parked; each delivery waits for a worker and is committed (``running``) before
``run(event)`` starts. An event for a parked, idle step comes unstored (``held``): its
envelope is written in that same commit, so it costs the step one commit, not two.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pykka import ActorDeadError

from pydynflow.action import RUN, Action, SuspendedRef, is_async_run, runs_in_world
from pydynflow.actors.messages import (
    AwaitEvent,
    Event,
    GoAhead,
    Parked,
    PhaseDone,
    Resume,
    StepOutcome,
    StoreHeld,
)
from pydynflow.actors.pooled import PooledActor, tell_and_run, tell_if_alive
from pydynflow.actors.runtime import Runtime
from pydynflow.clock import ClockClosedError
from pydynflow.events import Ping, Timeout
from pydynflow.logging import get_logger
from pydynflow.outcome import PhaseOutcome, failed_outcome
from pydynflow.phases import execute_run, execute_run_async, snapshot_outcome
from pydynflow.serialization import copy_plain
from pydynflow.states import StepState


class StepActor(PooledActor):
    """Run one run step's user code, park it between events, report every outcome."""

    # State that changes as the step goes; defaults on the class keep a waiting step small.
    state = "running"  # running -> parking -> parked -> resuming -> running
    current: Event | None = None  # the event being delivered
    suspend_callback: Any = None
    waiter: asyncio.Future[Any] | None = None  # an awaited wait_for_event
    wait_token = 0
    timer: Any = None

    def __init__(
        self,
        runtime: Runtime,
        supervisor: Any,
        step_id: int,
        queue: str,
        action: Action,
        event: Any = None,
        events: tuple[Event, ...] = (),
        attempt: int | None = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.supervisor = supervisor
        self.step_id = step_id
        self.queue = queue
        self.action = action
        # Events waiting for the step: a list once there is one (an empty deque is far
        # bigger, and most steps never get one while they run).
        self.pending: list[Event] | tuple[()] = list(events) if events else ()
        self.attempt = attempt  # bound in the log context of its user code
        self.is_async = is_async_run(type(action))
        if self.is_async:
            action._event_channel = _EventChannel(self.actor_ref)
            runtime.loop.call_soon_threadsafe(_start_task, action, event, self.actor_ref, attempt)
        else:
            self._run(event)

    def _run(self, event: Any) -> None:
        me = self._actor_ref  # `actor_ref` without pykka's property: once per step

        def on_done(outcome: PhaseOutcome | None, error: BaseException | None) -> None:
            if outcome is None or error is not None:
                outcome = failed_outcome(error or RuntimeError("worker returned nothing"))
            # On the worker's thread, which is done with the job: the step actor handles its
            # outcome right here if it is idle (no dispatcher thread woken for it).
            tell_and_run(me, PhaseDone(outcome))

        runtime = self.runtime
        if runtime.processes and runs_in_world(type(self.action)):
            pool = runtime.in_world(self.queue)  # it needs the world: not a worker process
        else:
            pool = runtime.pool(self.queue)
        pool.submit(execute_run, (self.action, event, self.attempt), on_done)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, PhaseDone):
            self._phase_done(message.outcome)
        elif isinstance(message, Event):
            self._event(message)
        elif isinstance(message, Parked):
            self._parked()
        elif isinstance(message, GoAhead):
            self._go_ahead()
        elif isinstance(message, AwaitEvent):
            self._await_event(message)
        return None

    # -- outcomes ------------------------------------------------------------------------

    def _phase_done(self, outcome: PhaseOutcome) -> None:
        # Usually on the worker that ran the step (see `_run`): if the supervisor is idle,
        # it takes the outcome on this thread too, instead of waiting for a dispatcher
        # thread to be woken and to get the interpreter lock.
        tell_and_run(self.supervisor, StepOutcome(self.step_id, outcome))
        if outcome.state != StepState.SUSPENDED:
            self.stop_now()  # events still queued are dropped with the step (Dynflow's rule)
            return
        self._park(outcome)
        self.suspend_callback = outcome.suspend_callback

    def _await_event(self, message: AwaitEvent) -> None:
        self.waiter = message.future
        self.wait_token += 1
        if message.timeout is not None:
            token, me = self.wait_token, self.actor_ref
            self.timer = self._schedule(
                message.timeout, lambda: tell_if_alive(me, Event(Timeout(), token=token))
            )
        self.supervisor.tell(StepOutcome(self.step_id, message.outcome))
        self._park(message.outcome)

    def _park(self, outcome: PhaseOutcome) -> None:
        self.state = "parking"
        if not self.is_async:  # an async run keeps its own action object across waits
            self.action._output = copy_plain(outcome.output)  # the record keeps the outcome's
        me = self.actor_ref
        for event, delay in outcome.events:
            if delay is None:
                self._queue(Event(event))
            else:
                self._schedule(delay, lambda e=event: tell_if_alive(me, Event(e)))

    def _schedule(self, delay: float, callback: Any) -> Any:
        try:
            return self.runtime.clock.schedule(delay, callback)
        except ClockClosedError:  # the world is stopping: the step restarts with run(None)
            return None

    def _parked(self) -> None:
        self.state = "parked"
        callback, self.suspend_callback = self.suspend_callback, None
        if callback is not None:  # user code: on a worker, never on the dispatcher
            ref = SuspendedRef(self.runtime.world, self.action.execution_plan_id, self.step_id)
            self.runtime.callbacks.submit(callback, (ref,), _log_callback_error)
        self._next()

    # -- events --------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if event.held:
            self._held_event(event)
            return
        if event.token is not None and (event.token != self.wait_token or self.waiter is None):
            return  # the timeout of a wait that is already over
        if not event.persisted and isinstance(event.payload, Ping) and self._ping_pending():
            return  # "look again" is asked already: sub-plans ending together wake it once
        self._queue(event)
        if self.state == "parked":
            self._next()

    def _held_event(self, event: Event) -> None:
        """An event its supervisor has not stored yet: take it now if parked and idle (its
        envelope then goes with the step's move to ``running``), else ask for it to be
        stored and queue it like any stored event."""
        if self.state == "parked" and not self.pending:
            self.current = event
            self.state = "resuming"
            self.supervisor.tell(Resume(self.step_id, True, held=True))
            return
        self.supervisor.tell(StoreHeld(self.step_id))
        self._queue(Event(event.payload, persisted=True))

    def _queue(self, event: Event) -> None:
        if self.pending:
            self.pending.append(event)  # type: ignore[union-attr]
        else:
            self.pending = [event]

    def _ping_pending(self) -> bool:
        return any(not e.persisted and isinstance(e.payload, Ping) for e in self.pending)

    def _next(self) -> None:
        while True:
            if not self.pending:
                self.pending = ()  # a popped list keeps its size: parked steps are many
                return
            event = self.pending.pop(0)  # type: ignore[union-attr]
            # A wait's timeout queued while an event was already on its way to that wait: it
            # belongs to a wait that is over, and must not end the next one.
            if event.token is None or event.token == self.wait_token:
                break
        if not self.pending:
            self.pending = ()
        self.current = event
        self.state = "resuming"
        self.supervisor.tell(Resume(self.step_id, self.current.persisted))

    def _go_ahead(self) -> None:
        self.state = "running"
        event, self.current = self.current, None
        assert event is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            loop = self.runtime.loop
            if isinstance(event.payload, Timeout):
                error = TimeoutError("Timeout exceeded.")
                loop.call_soon_threadsafe(_settle, waiter, None, error)
            else:
                loop.call_soon_threadsafe(_settle, waiter, event.payload, None)
            return
        self.action = self.action.renewed(RUN)
        self._run(event.payload)


class _EventChannel:
    """`Action.wait_for_event` of an async run: park the step; return the future of its next
    event (a call, not a coroutine: a waiting step keeps no frame of it). A slotted object,
    not a `functools.partial`, which carries a keywords dict: one per waiting step."""

    __slots__ = ("step",)

    def __init__(self, step: Any) -> None:
        self.step = step

    def __call__(self, action: Action, timeout: float | None) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        outcome = snapshot_outcome(action)
        action._planned_events, action._chunks = (), ()
        # On the loop's thread, which waits for this anyway: the step actor parks right here
        # if it is idle (see `_ReportDone`).
        if not tell_and_run(self.step, AwaitEvent(future, outcome, timeout)):
            raise ActorDeadError(f"{self.step} not found")  # as `ActorRef.tell` says it
        return future


def _start_task(action: Action, event: Any, step: Any, attempt: int | None = None) -> None:
    """On the world's loop: run an async ``run`` as a task that reports to its step actor.

    (Not ``run_coroutine_threadsafe``: its extra future, with a condition of its own, would
    stay with every waiting step.)
    """
    task = asyncio.get_running_loop().create_task(execute_run_async(action, event, attempt))
    _tasks.add(task)  # the loop keeps only weak references to its tasks
    task.add_done_callback(_ReportDone(step))


class _ReportDone:
    """A task's done callback: tell its step actor the outcome. (Slotted: a closure takes a
    function object and a cell per waiting step.)"""

    __slots__ = ("step",)

    def __init__(self, step: Any) -> None:
        self.step = step

    def __call__(self, finished: asyncio.Task[PhaseOutcome]) -> None:
        _tasks.discard(finished)
        # On the loop's thread: the step actor (and its supervisor, if idle) handle the
        # outcome right here, as on a worker's thread (see `StepActor._run`), instead of
        # waiting for a dispatcher thread to be woken. Their turns never block.
        tell_and_run(self.step, PhaseDone(_outcome(finished)))


_tasks: set[asyncio.Task[PhaseOutcome]] = set()


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _log_callback_error(result: Any, error: BaseException | None) -> None:
    if error is not None:
        get_logger(component="step").error("suspend callback failed", error=repr(error))


def _outcome(done: Any) -> PhaseOutcome:
    try:
        return done.result()  # type: ignore[no-any-return]
    except BaseException as exc:  # the phase runners catch Exception; this is the rest
        return failed_outcome(exc)
