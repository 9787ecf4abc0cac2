"""`StepActor`: one per running step; runs the user code off the dispatcher and reports.

The actor marks its step ``running`` (a state change sent to the persistence actor), hands
the user code to its queue's worker pool (or the world's asyncio loop for ``async def run``),
records the outcome, and reports to its plan supervisor only once the outcome is committed:
a step counts as done only when its state is durable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydynflow.actors.dispatch import PooledActor
from pydynflow.actors.messages import Committed, PhaseDone, RunningCommitted, StepFinished
from pydynflow.actors.persistence import changes
from pydynflow.actors.runtime import Runtime
from pydynflow.events import Skip
from pydynflow.logging import get_logger
from pydynflow.phases import (
    RUN,
    PhaseOutcome,
    execute_run,
    execute_run_async,
    is_async_run,
    new_action,
    run_accepts_event,
)
from pydynflow.plan import ActionRecord, Step, StepError, utcnow
from pydynflow.states import StepState


class StepActor(PooledActor):
    """Run one run step of a plan and report the committed outcome to the supervisor."""

    def __init__(self, runtime: Runtime, supervisor: Any, step: Step, action: ActionRecord) -> None:
        super().__init__()
        self.runtime = runtime
        self.supervisor = supervisor
        self.step = step  # snapshots owned by this actor
        self.record = action
        self.log = get_logger(
            world_id=runtime.world_id,
            plan_id=step.execution_plan_id,
            step_id=step.id,
            action_class=step.action_class_name,
            phase=str(step.phase),
        )

    def on_start(self) -> None:
        step = self.step
        if step.state == StepState.SKIPPING and not run_accepts_event(self.record.action_class):
            step.transition(StepState.SKIPPED)
            self._persist_outcome()
            return
        if step.state != StepState.SKIPPING:
            step.transition(StepState.RUNNING)
        if step.started_at is None:
            step.started_at = utcnow()
        # The user code starts only once "running" is durable: after a crash such a step is
        # found running and paused for a person ("Abnormal termination"), never re-run blindly.
        me = self.actor_ref
        self.runtime.persistence.tell(
            changes(
                self.runtime.storage,
                steps=(step,),
                actions=(self.record,),
                on_commit=lambda error: me.tell(RunningCommitted(error)),
            )
        )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunningCommitted):
            self._start_user_code(message.error)
        elif isinstance(message, PhaseDone):
            self._record_outcome(message.outcome)
        elif isinstance(message, Committed):
            if message.error is not None:
                self.log.error("step outcome not committed", error=str(message.error))
            self.supervisor.tell(StepFinished(self.step, self.record))
            self.stop()
        return None

    def _start_user_code(self, error: BaseException | None) -> None:
        if error is not None:
            self.log.error("step could not be marked running", error=str(error))
            self._record_outcome(_failed_outcome(error))
            return
        self.log.debug("step started")
        step, record = self.step, self.record
        action = new_action(record, RUN)
        event = Skip() if step.state == StepState.SKIPPING else None
        if is_async_run(record.action_class):
            coroutine = execute_run_async(action, event)
            running: Any = asyncio.run_coroutine_threadsafe(coroutine, self.runtime.loop)
        else:
            running = self.runtime.pool(step.queue).submit(execute_run, action, event)
        me = self.actor_ref
        running.add_done_callback(lambda done: me.tell(PhaseDone(_outcome(done))))

    def _record_outcome(self, outcome: PhaseOutcome) -> None:
        step = self.step
        skipping = step.state == StepState.SKIPPING
        if outcome.state == StepState.SUCCESS:
            step.transition(StepState.SKIPPED if skipping else StepState.SUCCESS)
            step.error = None
        else:
            step.transition(StepState.ERROR)
            step.error = outcome.error
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        self.record.output = outcome.output
        self._persist_outcome()
        self.log.debug("step finished", state=str(step.state))

    def _persist_outcome(self) -> None:
        step = self.step
        step.ended_at = utcnow()
        if step.started_at is not None:
            step.real_time = (step.ended_at - step.started_at).total_seconds()
        me = self.actor_ref
        message = changes(
            self.runtime.storage,
            steps=(step,),
            actions=(self.record,),
            on_commit=lambda error: me.tell(Committed(error)),
        )
        self.runtime.persistence.tell(message)


def _outcome(done: Any) -> PhaseOutcome:
    try:
        return done.result()  # type: ignore[no-any-return]
    except BaseException as exc:  # the phase runners catch Exception; this is the rest
        return _failed_outcome(exc)


def _failed_outcome(exc: BaseException) -> PhaseOutcome:
    return PhaseOutcome(StepState.ERROR, {}, StepError.from_exception(exc), 0.0, 0.0, exc)
