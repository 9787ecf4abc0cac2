"""Rescue policies: what the plan supervisor does when a run or finalize step fails.

`Pause`, `Skip` and `Fail` are Dynflow's rescue strategies; `Retry` is a restart policy that
re-runs the step before one of them applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydynflow.states import StepState

if TYPE_CHECKING:
    from pydynflow.plan import ExecutionPlan


class RescuePolicy:
    """Base of the rescue policies; compare them with ``is`` for the three strategies."""

    name: str = ""

    def __repr__(self) -> str:
        return self.name


class _Strategy(RescuePolicy):
    def __init__(self, name: str) -> None:
        self.name = name


Pause: RescuePolicy = _Strategy("Pause")
"""Leave the plan ``paused`` with result ``error`` so a person can resume or skip."""

Skip: RescuePolicy = _Strategy("Skip")
"""Mark the failed step (and what depends on it) ``skipped`` and go on: result ``warning``.

Not the event: ``from pydynflow import Skip`` is this policy,
``from pydynflow.events import Skip`` the event a skipped step's ``run`` receives.
"""

Fail: RescuePolicy = _Strategy("Fail")
"""Stop the plan (``stopped`` / ``error``); pending steps stay pending."""


@dataclass(frozen=True)
class Retry(RescuePolicy):
    """Restart a failed step up to ``attempts`` more times, then apply ``then``.

    Waits ``backoff * factor ** (attempt - 1)`` seconds (at most ``max_backoff``) before each
    new attempt.
    """

    attempts: int
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 60.0
    then: RescuePolicy = Pause

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"Retry({self.attempts})"

    def delay(self, attempt: int) -> float:
        """Return the wait before retry number ``attempt`` (1-based)."""
        return min(self.max_backoff, self.backoff * self.factor ** max(0, attempt - 1))


def combine(strategies: list[RescuePolicy]) -> RescuePolicy:
    """Combine per-step strategies as Dynflow does: all Skip -> Skip, all Fail -> Fail."""
    if strategies and all(s is Skip for s in strategies):
        return Skip
    if strategies and all(s is Fail for s in strategies):
        return Fail
    return Pause


def strategy_of(policy: RescuePolicy) -> RescuePolicy:
    """Return the rescue strategy a policy ends in (a `Retry`'s ``then``, recursively)."""
    while isinstance(policy, Retry):
        policy = policy.then
    return policy


def plan_rescue_strategy(plan: ExecutionPlan) -> RescuePolicy:
    """Return the strategy Dynflow would apply to a failed plan.

    Each action suggests its own strategy (its class's ``rescue``) if one of its steps
    failed, and takes the suggestion of every action it planned: the planned action's own
    combined strategy, unless ``rescue_for_planned`` overrides it. Suggestions combine as
    in `combine`; a plan with no failure at all gets `Skip` (Dynflow's default).
    """
    root = plan.root_plan_step
    if root is None:
        return Pause
    return _action_strategy(plan, root.action_id) or Skip


def _action_strategy(plan: ExecutionPlan, action_id: int) -> RescuePolicy | None:
    record = plan.actions[action_id]
    own = (record.plan_step_id, record.run_step_id, record.finalize_step_id)
    suggested: list[RescuePolicy] = []
    action_class = record.action_class
    if any(sid is not None and plan.steps[sid].state == StepState.ERROR for sid in own):
        suggested.append(strategy_of(action_class.rescue))
    if record.plan_step_id is None:
        return combine(suggested) if suggested else None
    parent = None
    for child_step_id in plan.steps[record.plan_step_id].children:
        child_id = plan.steps[child_step_id].action_id
        if parent is None:
            parent = action_class.from_record(record)
        child = plan.actions[child_id]
        override = parent.rescue_for_planned(child.action_class.from_record(child))
        if override is not None:
            suggested.append(strategy_of(override))
        else:
            child_strategy = _action_strategy(plan, child_id)
            if child_strategy is not None:
                suggested.append(child_strategy)
    return combine(suggested) if suggested else None
