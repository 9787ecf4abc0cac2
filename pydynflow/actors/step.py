"""`StepActor`: one per running step; runs the user code off the dispatcher and reports.

Its supervisor has already made the step's move to ``running`` durable when the actor
starts (a step is never run before that is committed, so after a crash it is found
``running`` and paused for a person, not re-run blindly). The actor hands the user code to
its queue's worker pool (or the world's asyncio loop for ``async def run``) and sends the
outcome to the supervisor, which commits it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydynflow.actors.dispatch import PooledActor
from pydynflow.actors.messages import PhaseDone, StepOutcome
from pydynflow.actors.runtime import Runtime
from pydynflow.phases import (
    RUN,
    PhaseOutcome,
    execute_run,
    execute_run_async,
    is_async_run,
    new_action,
)
from pydynflow.plan import ActionRecord, StepError
from pydynflow.states import StepState


class StepActor(PooledActor):
    """Run one run step's user code and report its outcome to the plan supervisor."""

    def __init__(
        self,
        runtime: Runtime,
        supervisor: Any,
        step_id: int,
        queue: str,
        record: ActionRecord,
        event: Any = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.supervisor = supervisor
        self.step_id = step_id
        self.queue = queue
        self.record = record  # a snapshot with the resolved input
        self.event = event

    def on_start(self) -> None:
        action = new_action(self.record, RUN)
        me = self.actor_ref
        if is_async_run(self.record.action_class):
            coroutine = execute_run_async(action, self.event)
            running = asyncio.run_coroutine_threadsafe(coroutine, self.runtime.loop)
            running.add_done_callback(lambda done: me.tell(PhaseDone(_outcome(done))))
        else:

            def on_done(outcome: PhaseOutcome | None, error: BaseException | None) -> None:
                if outcome is None or error is not None:
                    outcome = failed_outcome(error or RuntimeError("worker returned nothing"))
                me.tell(PhaseDone(outcome))

            self.runtime.pool(self.queue).submit(execute_run, (action, self.event), on_done)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, PhaseDone):
            self.supervisor.tell(StepOutcome(self.step_id, message.outcome))
            self.stop()
        return None


def _outcome(done: Any) -> PhaseOutcome:
    try:
        return done.result()  # type: ignore[no-any-return]
    except BaseException as exc:  # the phase runners catch Exception; this is the rest
        return failed_outcome(exc)


def failed_outcome(exc: BaseException) -> PhaseOutcome:
    """Return the outcome of a phase that could not run at all."""
    return PhaseOutcome(StepState.ERROR, {}, StepError.from_exception(exc), 0.0, 0.0, exc)
