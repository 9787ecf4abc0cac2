"""Skipping a failed step: which steps of a plan go with it (Dynflow's ``skip``)."""

from __future__ import annotations

from pydynflow.plan import ExecutionPlan, Step
from pydynflow.references import iter_references
from pydynflow.states import Phase, StepState


def skip_plan_steps(plan: ExecutionPlan, failed: Step) -> list[Step]:
    """Mark ``failed`` skipping and the steps depending on it skipped; return the changed.

    A run step depends on ``failed`` when its input references the failed step's action, or
    the action of another skipped step (transitively). The finalize steps of every skipped
    action are skipped too.
    """
    skipped_actions = {failed.action_id}
    changed = [failed]
    failed.transition(StepState.SKIPPING)
    run_steps = sorted(plan.steps_of_phase(Phase.RUN), key=lambda step: step.id)
    grew = True
    while grew:
        grew = False
        for step in run_steps:
            if step.action_id in skipped_actions or step.state != StepState.PENDING:
                continue
            if any(ref.action_id in skipped_actions for ref in iter_references(step.input)):
                step.transition(StepState.SKIPPED)
                skipped_actions.add(step.action_id)
                changed.append(step)
                grew = True
    for step in plan.steps_of_phase(Phase.FINALIZE):
        if step.action_id in skipped_actions and step.state != StepState.SKIPPED:
            step.transition(StepState.SKIPPED)
            changed.append(step)
    return changed
