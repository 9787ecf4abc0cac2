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

from pydynflow.action import Action
from pydynflow.actors.dispatch import PooledActor
from pydynflow.actors.messages import PhaseDone, StepOutcome
from pydynflow.actors.runtime import Runtime
from pydynflow.phases import PhaseOutcome, execute_run, execute_run_async, is_async_run
from pydynflow.plan import StepError
from pydynflow.states import StepState


class StepActor(PooledActor):
    """Run one run step's user code and report its outcome to the plan supervisor.

    The code is handed to the worker pool as the actor is built, so the actor starts idle
    (holding no dispatcher turn); the pool's answer waits in its mailbox until it starts.
    """

    def __init__(
        self,
        runtime: Runtime,
        supervisor: Any,
        step_id: int,
        queue: str,
        action: Action,
        event: Any = None,
    ) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.step_id = step_id
        me = self.actor_ref
        if is_async_run(type(action)):
            coroutine = execute_run_async(action, event)
            running = asyncio.run_coroutine_threadsafe(coroutine, runtime.loop)
            running.add_done_callback(lambda done: me.tell(PhaseDone(_outcome(done))))
        else:

            def on_done(outcome: PhaseOutcome | None, error: BaseException | None) -> None:
                if outcome is None or error is not None:
                    outcome = failed_outcome(error or RuntimeError("worker returned nothing"))
                me.tell(PhaseDone(outcome))

            runtime.pool(queue).submit(execute_run, (action, event), on_done)

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
