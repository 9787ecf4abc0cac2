"""`PlanSupervisor`: one actor per running execution plan, the parent of its step actors.

It claims the plan (``planned``/``paused`` -> ``running``, a conditional update, so a plan
never runs twice at once), walks the run flow with a `FlowGraph` (concurrence branches in
parallel, sequences in order, a failed step stops only its own sequence), spawns a
`StepActor` for each step it starts, and when the run flow is complete runs the finalize
flow in order on a worker and commits all of it in one transaction. A failed step pauses the
plan; what else a failure can mean (Skip, Fail, Retry) is decided here, as the parent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydynflow.actors.dispatch import PooledActor
from pydynflow.actors.messages import (
    Claim,
    Committed,
    FinalizeDone,
    PlanDone,
    StepFinished,
    Wind,
)
from pydynflow.actors.persistence import changes
from pydynflow.actors.runtime import Runtime
from pydynflow.actors.step import StepActor
from pydynflow.errors import DynflowError
from pydynflow.logging import get_logger
from pydynflow.phases import FINALIZE, execute_finalize, new_action
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.references import resolve_references
from pydynflow.scheduling import FlowGraph
from pydynflow.states import PlanState, StepState

_RUNNABLE = (StepState.PENDING, StepState.ERROR, StepState.SKIPPING)
_DONE = (StepState.SUCCESS, StepState.SKIPPED)


class PlanSupervisor(PooledActor):
    """Run one execution plan: its run flow through step actors, then its finalize flow."""

    def __init__(self, runtime: Runtime, plan: ExecutionPlan, executor: Any) -> None:
        super().__init__()
        self.runtime = runtime
        self.plan = plan
        self.executor = executor
        self.children: dict[int, Any] = {}
        self.graph: FlowGraph | None = None
        self.winding_down = False
        self.finishing = False
        self.log = get_logger(world_id=runtime.world_id, plan_id=plan.id, label=plan.label)

    # -- start ---------------------------------------------------------------------------

    def on_start(self) -> None:
        plan = self.plan
        if plan.state not in (PlanState.PLANNED, PlanState.PAUSED):
            self._give_up(DynflowError(f"execution plan {plan.id} is {plan.state}, not runnable"))
            return
        plan.transition(PlanState.RUNNING, self.runtime.world_id)
        me = self.actor_ref
        self._send(
            plans=True,
            claim=Claim(plan.id, (PlanState.PLANNED.value, PlanState.PAUSED.value)),
            on_commit=lambda error: me.tell(Committed(error)),
        )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StepFinished):
            self._step_finished(message.step, message.action)
        elif isinstance(message, Committed):
            self._claimed(message.error)
        elif isinstance(message, FinalizeDone):
            self._finalize_done(message)
        elif isinstance(message, Wind):
            self.winding_down = True
            if not self.children and not self.finishing:
                self._finish(PlanState.PAUSED)
        return None

    def _claimed(self, error: BaseException | None) -> None:
        if error is not None:
            self._give_up(DynflowError(f"execution plan {self.plan.id} is already running"))
            return
        self.log.info("plan started")
        self.graph = FlowGraph(self.plan.run_flow)
        done = [sid for sid, step in self.plan.steps.items() if step.state in _DONE]
        self._launch(self.graph.start(done))
        self._maybe_run_flow_finished()

    def _give_up(self, error: BaseException) -> None:
        self.executor.tell(PlanDone(self.plan.id, None, error))
        self.stop()

    # -- run flow ------------------------------------------------------------------------

    def _launch(self, step_ids: list[int]) -> None:
        for step_id in step_ids:
            if self.winding_down:
                return
            step = self.plan.steps[step_id]
            if step.state not in _RUNNABLE:
                self._fail_unrunnable(step)
                continue
            record = copy.copy(step.action)
            assert record is not None
            if step.state != StepState.SKIPPING:
                try:
                    record.input = resolve_references(record.input, self._output_of)
                except DynflowError as exc:
                    self._fail_unrunnable(step, exc)
                    continue
            self.children[step_id] = StepActor.start(
                self.runtime,
                self.actor_ref,
                copy.copy(step),
                record,
                _dispatcher=self.runtime.dispatcher,
            )

    def _output_of(self, action_id: int) -> dict[str, Any]:
        return self.plan.actions[action_id].output

    def _fail_unrunnable(self, step: Step, exc: BaseException | None = None) -> None:
        exc = exc or DynflowError(f"step {step.id} cannot run from state {step.state}")
        step.state = StepState.ERROR  # bypasses the table: the step never started
        step.error = StepError.from_exception(exc)
        assert self.graph is not None
        self.graph.fail(step.id)
        self._send(steps=(step,))

    def _step_finished(self, step: Step, record: ActionRecord) -> None:
        self.children.pop(step.id, None)
        self._adopt(step, record)
        assert self.graph is not None
        if step.state in _DONE:
            self._launch(self.graph.complete(step.id))
        else:
            self.graph.fail(step.id)
        self._maybe_run_flow_finished()

    def _adopt(self, step: Step, record: ActionRecord) -> None:
        """Take a child's final snapshots into the plan (one record object per action)."""
        stored = self.plan.actions[record.id]
        stored.input, stored.output = record.input, record.output
        step.action = stored
        self.plan.steps[step.id] = step

    def _maybe_run_flow_finished(self) -> None:
        assert self.graph is not None
        if self.children or self.finishing:
            return
        if self.winding_down:
            self._finish(PlanState.PAUSED)
        elif not self.graph.is_done():
            return
        elif self.graph.is_complete():
            self._run_finalize_flow()
        else:
            self._finish(PlanState.PAUSED)

    # -- finalize flow -------------------------------------------------------------------

    def _run_finalize_flow(self) -> None:
        steps = [copy.copy(self.plan.steps[sid]) for sid in self.plan.finalize_flow.all_step_ids()]
        steps = [step for step in steps if step.state != StepState.SKIPPED]
        if not steps:
            self._finish(PlanState.STOPPED)
            return
        self.finishing = True
        for step in steps:
            if step.state in (StepState.SUCCESS, StepState.ERROR):
                step.transition(StepState.PENDING)  # resume re-runs the whole finalize phase
        records = {step.action_id: copy.copy(self.plan.actions[step.action_id]) for step in steps}
        me = self.actor_ref
        pool = self.runtime.pool("default")
        future = pool.submit(_run_finalize_steps, steps, records)
        future.add_done_callback(lambda done: me.tell(done.result()))

    def _finalize_done(self, message: FinalizeDone) -> None:
        for step in message.steps:
            record = next(r for r in message.actions if r.id == step.action_id)
            self._adopt(step, record)
        failed = any(step.state == StepState.ERROR for step in message.steps)
        self._finish(PlanState.PAUSED if failed else PlanState.STOPPED, message.steps)

    # -- end -----------------------------------------------------------------------------

    def _finish(self, state: PlanState, steps: tuple[Step, ...] = ()) -> None:
        self.finishing = True
        plan = self.plan
        plan.transition(state, self.runtime.world_id)
        me, executor = self.actor_ref, self.executor
        records = tuple(plan.actions[step.action_id] for step in steps)

        def on_commit(error: BaseException | None) -> None:
            executor.tell(PlanDone(plan.id, plan, error))
            me.stop(block=False)

        self._send(steps=steps, actions=records, plans=True, on_commit=on_commit)
        self.log.info("plan finished", state=str(state), result=str(plan.result))

    def _send(
        self,
        steps: tuple[Step, ...] = (),
        actions: tuple[ActionRecord, ...] = (),
        plans: bool = False,
        claim: Claim | None = None,
        on_commit: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        message = changes(
            self.runtime.storage,
            plan=self.plan if plans else None,
            steps=steps,
            actions=actions,
            claim=claim,
            on_commit=on_commit,
        )
        self.runtime.persistence.tell(message)


def _run_finalize_steps(steps: list[Step], records: dict[int, ActionRecord]) -> FinalizeDone:
    """Run finalize steps in order on a worker; stop at the first failure."""
    failed = False
    for step in steps:
        if failed:
            break
        record = records[step.action_id]
        step.transition(StepState.RUNNING)
        step.started_at = step.started_at or utcnow()
        outcome = execute_finalize(new_action(record, FINALIZE))
        step.transition(outcome.state)
        step.error = outcome.error
        step.execution_time += outcome.execution_time
        step.progress_done = outcome.progress
        step.ended_at = utcnow()
        step.real_time = (step.ended_at - step.started_at).total_seconds()
        record.output = outcome.output
        failed = outcome.state == StepState.ERROR
    return FinalizeDone(tuple(steps), tuple(records.values()))
