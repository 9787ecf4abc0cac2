"""`ExecutorActor`: accepts plans to execute, starts their supervisors, answers the callers.

It keeps one `PlanSupervisor` per running plan (a dict, not pykka's registry) and the
futures of the callers waiting for each plan. A plan stored ``running`` that no supervisor
of this world runs was left by a world that died or a commit that failed: unless another
registered world runs it, it is recovered (`pydynflow.recovery.recover_plan`) and run
again. On `Terminate` it takes no new work, tells every supervisor to wind down (start
nothing new, pause once running steps return) and answers when the last one is gone.
"""

from __future__ import annotations

from typing import Any

from pydynflow.actors.messages import (
    Abandon,
    CancelPlan,
    DeliverEvent,
    ExecutePlan,
    HaltPlan,
    PlanDone,
    Terminate,
    Wind,
)
from pydynflow.actors.persistence import changes, store_plan
from pydynflow.actors.plan_supervisor import PlanSupervisor
from pydynflow.actors.pooled import PooledActor, stop_if_alive, tell_if_alive
from pydynflow.actors.runtime import Runtime
from pydynflow.errors import AlreadyRunning, DynflowError, PersistenceError, UnknownPlan
from pydynflow.logging import get_logger
from pydynflow.plan import ExecutionPlan
from pydynflow.recovery import interrupted, recover_plan
from pydynflow.states import PlanState


class ExecutorTerminated(DynflowError):
    """Raise when work is sent to an executor that is terminating or stopped."""


class ExecutorActor(PooledActor):
    """Own the running plans of one world."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.supervisors: dict[str, Any] = {}
        self.waiting: dict[str, Any] = {}  # plan id -> the future of its caller
        self.terminating: list[Any] | None = None
        self.log = get_logger(world_id=runtime.world_id, component="executor")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ExecutePlan):
            self._execute(message)
        elif isinstance(message, PlanDone):
            self._plan_done(message)
        elif isinstance(message, Terminate):
            self._terminate(message.future)
        elif isinstance(message, Abandon):
            self._abandon(message.error)
        elif isinstance(message, (DeliverEvent, CancelPlan, HaltPlan)):
            supervisor = self.supervisors.get(message.plan_id)
            # Its supervisor may have stopped before its end reached us (PlanDone).
            if supervisor is None or not tell_if_alive(supervisor, message):
                message.dead_letter()
        return None

    def _execute(self, message: ExecutePlan) -> None:
        plan_id, future = message.plan_id, message.future
        if self.terminating is not None:
            if message.stored is not None and message.plan is not None:
                runtime = self.runtime  # store it, but do not run it
                store_plan(runtime.persistence, runtime.storage, message.plan, message.stored)
            future.set_exception(ExecutorTerminated("the executor is terminated: no new work"))
            return
        if plan_id in self.supervisors:
            future.set_exception(AlreadyRunning(f"execution plan {plan_id} is already running"))
            return
        plan = message.plan
        if plan is None or (message.mode == "continue" and message.stored is None):
            # A plan to continue was read when its caller chose it, paused by a stop or a
            # crash; it may have been continued and paused for a person since: read it now.
            try:
                plan = self.runtime.storage.load_plan(plan_id)
            except (UnknownPlan, PersistenceError) as exc:
                future.set_exception(exc)
                return
        if plan.state == PlanState.STOPPED:
            future.set_exception(DynflowError(f"execution plan {plan_id} is stopped: it's done"))
            return
        mode = message.mode
        if mode == "continue" and plan.state == PlanState.PAUSED and not interrupted(plan):
            future.set_result(plan)  # paused for a person: only a resume runs it again
            return
        orphaned = plan.state == PlanState.RUNNING  # no supervisor here runs it
        if orphaned and mode != "continue":
            owner = self._live_owner(plan)
            if owner is not None:
                future.set_exception(
                    AlreadyRunning(f"execution plan {plan_id} is running on world {owner}")
                )
                return
        if orphaned and not self._recover(plan) and mode != "resume":
            future.set_result(plan)  # paused for a person (max_recoveries)
            return
        self.waiting[plan_id] = future
        self._start(plan, mode, message.note, message.stored)

    def _start(
        self,
        plan: ExecutionPlan,
        mode: str,
        note: dict[str, Any] | None = None,
        stored: Any = None,
    ) -> None:
        plan.world = self.runtime.world
        # A fresh plan's caller waits for its first commit: start the supervisor (which
        # sends that commit) on this thread, not behind every actor queued on the pool.
        self.supervisors[plan.id] = PlanSupervisor.start(
            self.runtime,
            plan,
            self.actor_ref,
            stored,
            mode,
            note,
            _dispatcher=self.runtime.dispatcher,
            _first_turn_here=stored is not None,
        )

    def _live_owner(self, plan: ExecutionPlan) -> str | None:
        """Return the other world running ``plan`` if it is registered (alive, as far as
        anyone knows), else None: the plan is this world's to recover."""
        owner = plan.executing_world_id()
        if owner is None or owner == self.runtime.world_id:
            return None
        try:
            registered = {record["id"] for record in self.runtime.storage.world_records()}
        except PersistenceError:
            return owner  # cannot tell: do not take it
        return owner if owner in registered else None

    def _recover(self, plan: ExecutionPlan) -> bool:
        """Record that ``plan``, stored running, lost its world; return whether its
        policies may continue it (False: paused for a person after too many recoveries).

        The recovery is committed before the plan's next claim (messages to the
        persistence actor are committed in order).
        """
        runtime = self.runtime
        abandoned = recover_plan(plan, runtime.world_id, runtime.max_recoveries)
        self.log.warning(
            "recovered a plan left running",
            plan_id=plan.id,
            abandoned_steps=[step.id for step in abandoned],
        )
        runtime.persistence.tell(changes(runtime.storage, plan=plan, steps=abandoned))
        return plan.pause_reason() != "recoveries"

    def _plan_done(self, message: PlanDone) -> None:
        self.supervisors.pop(message.plan_id, None)
        if message.reclaim and self.terminating is None and self._reclaim(message.plan_id):
            return
        future = self.waiting.pop(message.plan_id, None)
        if future is not None:
            if message.error is not None:
                future.set_exception(message.error)
            else:
                future.set_result(message.plan)
        if self.terminating is not None and not self.supervisors:
            self._answer_terminate()

    def _reclaim(self, plan_id: str) -> bool:
        """Run a plan again whose supervisor gave up after a failed commit, from what is
        stored; return False if it cannot be (its callers then get the error)."""
        try:
            plan = self.runtime.storage.load_plan(plan_id)
        except (UnknownPlan, PersistenceError) as exc:
            self.log.error(
                "cannot reclaim a plan after a failed commit", plan_id=plan_id, error=str(exc)
            )
            return False
        if plan.state == PlanState.RUNNING and not self._recover(plan):
            return False
        if plan.state not in (PlanState.RUNNING, PlanState.PAUSED, PlanState.PLANNED):
            return False
        self._start(plan, "continue")
        return True

    def _abandon(self, error: BaseException) -> None:
        """Persistence is gone: answer every waiting caller with ``error``, stop everything."""
        self.terminating = self.terminating or []
        for supervisor in self.supervisors.values():
            stop_if_alive(supervisor)
        self.supervisors.clear()
        for future in self.waiting.values():
            future.set_exception(error)
        self.waiting.clear()
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
