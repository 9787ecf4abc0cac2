"""What a world that died leaves behind: the plans it ran, recovered by another world.

A step stored ``running`` when its world died may or may not have finished its code: it
becomes ``error`` "Abnormal termination" and its plan ``paused``, for its rescue policies to
continue it, or for a person once the same work has been under a world's death too often.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydynflow.plan import ExecutionPlan, Step, StepError, utcnow
from pydynflow.states import Phase, PlanState, Result, StepState

__all__ = ["ABNORMAL_TERMINATION", "interrupted", "recover_plan", "recoveries"]

ABNORMAL_TERMINATION = "pydynflow.errors.AbnormalTermination"
"""The error class named by the steps a dead world left ``running``."""

_DONE = (StepState.SUCCESS, StepState.SKIPPED)


def interrupted(plan: ExecutionPlan) -> bool:
    """Return whether a paused plan was interrupted (a stop, a crash) rather than paused
    for a person; a plan paused before reasons were recorded counts if it has no error."""
    reason = plan.pause_reason()
    if reason is None:
        return plan.result != Result.ERROR
    return reason in ("stop", "crash")


def recoveries(plan: ExecutionPlan, running: Iterable[int | str]) -> int:
    """Return how many times a world died while one of ``running`` ran (step ids, or
    ``"finalize"`` for the finalize phase), since a person last resumed the plan: the most
    for any of them."""
    counts: dict[int | str, int] = {}
    for entry in reversed(plan.history):
        if entry.name == "resume":
            break
        if entry.name == "terminate execution":
            for item in (entry.details or {}).get("running", ()):
                counts[item] = counts.get(item, 0) + 1
    return max((counts.get(item, 0) for item in running), default=0)


def recover_plan(plan: ExecutionPlan, world_id: str | None, max_recoveries: int) -> list[Step]:
    """Record that the world running ``plan`` died; return the steps that changed.

    Its ``running`` steps become ``error`` "Abnormal termination" (their code may or may not
    have finished), a ``"terminate execution"`` history entry names what ran (those steps,
    or ``"finalize"`` if the finalize phase was due), and the plan is ``paused``: for its
    rescue policies to continue it (reason ``"crash"``), or, when what ran has now been
    under its world's death ``max_recoveries`` times since a person last resumed the plan,
    for a person (reason ``"recoveries"``: a step that kills its world is not run forever).
    """
    abandoned = [s for s in plan.steps.values() if s.state == StepState.RUNNING]
    running: list[int | str] = [step.id for step in abandoned]
    if not running and _finalize_was_due(plan):
        running = ["finalize"]
    plan.note("terminate execution", world_id, {"running": running})
    count = recoveries(plan, running)
    limit = count >= max_recoveries
    message = "Abnormal termination (previous state: running)"
    if limit:
        message += (
            f"; its world died under it {count} times since the plan was last resumed "
            f"(max_recoveries={max_recoveries}): paused for a person"
        )
    for step in abandoned:
        step.state = StepState.ERROR
        step.error = StepError(ABNORMAL_TERMINATION, message)
        step.ended_at = utcnow()
    details: dict[str, Any] = {"reason": "recoveries" if limit else "crash"}
    if limit:
        details["message"] = message
    plan.transition(PlanState.PAUSED, world_id, details)
    return abandoned


def _finalize_was_due(plan: ExecutionPlan) -> bool:
    """Return whether the run flow was over and the finalize phase not (it was running)."""
    steps = plan.steps.values()
    if any(s.phase == Phase.RUN and s.state not in _DONE for s in steps):
        return False
    return any(s.phase == Phase.FINALIZE and s.state not in _DONE for s in steps)
