"""`ExecutorActor`: accepts plans to execute, starts their supervisors, answers the callers.

It keeps one `PlanSupervisor` per running plan (a dict, not pykka's registry) and the
futures of the callers waiting for each plan. On `Terminate` it takes no new work, tells
every supervisor to wind down (start nothing new, pause once running steps return) and
answers when the last one is gone.
"""

from __future__ import annotations

from typing import Any

from pydynflow.actors.dispatch import PooledActor
from pydynflow.actors.messages import (
    CancelPlan,
    DeliverEvent,
    ExecutePlan,
    HaltPlan,
    PlanDone,
    Terminate,
    Wind,
)
from pydynflow.actors.persistence import store_plan
from pydynflow.actors.plan_supervisor import PlanSupervisor
from pydynflow.actors.runtime import Runtime
from pydynflow.errors import DynflowError, EventRejected, UnknownPlan
from pydynflow.logging import get_logger
from pydynflow.states import PlanState


class NotRunningHere(EventRejected):
    """An event for a plan this executor is not running (the caller checks the store)."""


class ExecutorTerminated(DynflowError):
    """Raise when work is sent to an executor that is terminating or stopped."""


class ExecutorActor(PooledActor):
    """Own the running plans of one world."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.supervisors: dict[str, Any] = {}
        self.waiting: dict[str, list[Any]] = {}
        self.terminating: list[Any] | None = None
        self.log = get_logger(world_id=runtime.world_id, component="executor")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ExecutePlan):
            self._execute(message)
        elif isinstance(message, PlanDone):
            self._plan_done(message)
        elif isinstance(message, Terminate):
            self._terminate(message.future)
        elif isinstance(message, (DeliverEvent, CancelPlan, HaltPlan)):
            supervisor = self.supervisors.get(message.plan_id)
            if supervisor is None:
                self._not_running(message)
            else:
                supervisor.tell(message)
        return None

    @staticmethod
    def _not_running(message: DeliverEvent | CancelPlan | HaltPlan) -> None:
        """Answer a message for a plan this executor is not running."""
        if isinstance(message, DeliverEvent):  # the caller looks at the store to say why
            message.reply.set_exception(
                NotRunningHere(f"execution plan {message.plan_id} is not running here")
            )
        elif isinstance(message, CancelPlan):
            message.reply.set_result(0)
        else:
            message.reply.set_result(False)

    def _execute(self, message: ExecutePlan) -> None:
        plan_id, future = message.plan_id, message.future
        if self.terminating is not None:
            if message.stored is not None and message.plan is not None:
                runtime = self.runtime  # store it, but do not run it
                store_plan(runtime.persistence, runtime.storage, message.plan, message.stored)
            future.set_exception(ExecutorTerminated("the executor is terminated: no new work"))
            return
        if plan_id in self.supervisors:
            future.set_exception(DynflowError(f"execution plan {plan_id} is already running"))
            return
        plan = message.plan
        if plan is None:
            try:
                plan = self.runtime.storage.load_plan(plan_id)
            except UnknownPlan as exc:
                future.set_exception(exc)
                return
        plan.world = self.runtime.world
        if plan.state == PlanState.STOPPED:
            future.set_exception(DynflowError(f"execution plan {plan_id} is stopped: it's done"))
            return
        if plan.state == PlanState.RUNNING:
            future.set_exception(DynflowError(f"execution plan {plan_id} is already running"))
            return
        self.waiting[plan_id] = [future]
        # A fresh plan's caller waits for its first commit: start the supervisor (which
        # sends that commit) on this thread, not behind every actor queued on the pool.
        self.supervisors[plan_id] = PlanSupervisor.start(
            self.runtime,
            plan,
            self.actor_ref,
            message.stored,
            _dispatcher=self.runtime.dispatcher,
            _first_turn_here=message.stored is not None,
        )

    def _plan_done(self, message: PlanDone) -> None:
        self.supervisors.pop(message.plan_id, None)
        for future in self.waiting.pop(message.plan_id, []):
            if message.error is not None:
                future.set_exception(message.error)
            else:
                future.set_result(message.plan)
        if self.terminating is not None and not self.supervisors:
            self._answer_terminate()

    def _terminate(self, future: Any) -> None:
        if self.terminating is None:
            self.terminating = []
            for supervisor in self.supervisors.values():
                supervisor.tell(Wind())
        self.terminating.append(future)
        if not self.supervisors:
            self._answer_terminate()

    def _answer_terminate(self) -> None:
        waiting, self.terminating = self.terminating or [], []
        for future in waiting:
            future.set_result(True)
