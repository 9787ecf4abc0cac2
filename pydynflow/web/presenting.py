"""A loaded plan turned into what its page draws: the flows as nested boxes, a timeline of its
steps, each step's details and the buttons that apply.

Everything here is plain data for the templates, which escape every value: JSON is shown as
text (`pretty`), never as markup. The plan comes from `World.load`, so the ``present``
middleware of its actions has run; the input, output and output chunks of an action whose
class this process cannot import are hidden (its ``present`` hooks could not run, and they
might have masked a secret).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from pydynflow.flows import Atom, Concurrence, Flow, Sequence
from pydynflow.plan import ExecutionPlan, Step
from pydynflow.states import Phase, PlanState, StepState

__all__ = [
    "FlowNode",
    "PlanView",
    "StepView",
    "TimelineBar",
    "describe_plan",
    "describe_step",
    "duration",
    "pretty",
    "short_class",
]

MAX_JSON_CHARS = 100_000
"""Longer JSON is cut (with a note): a page must stay readable and fast."""
_LIVE_STEP = (StepState.RUNNING, StepState.SUSPENDED)


def pretty(value: Any) -> str:
    """Return ``value`` as indented JSON text (cut after `MAX_JSON_CHARS` characters)."""
    try:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + f"\n... ({len(text) - MAX_JSON_CHARS:,} more characters)"
    return text


def short_class(name: str | None) -> str:
    """Return a class's name without its module (``a.b.Deploy`` -> ``Deploy``)."""
    if not name:
        return "?"
    return name.rsplit(".", 1)[-1]


def duration(seconds: float | None) -> str:
    """Return seconds as a short human text (``850 ms``, ``12.3 s``, ``4 min 5 s``)."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclasses.dataclass
class StepView:
    """One step as the page shows it."""

    step: Step
    name: str
    hidden: bool
    """Its action's class is not importable here: input, output and chunks are hidden."""
    skippable: bool
    cancellable: bool
    takes_events: bool

    @property
    def id(self) -> int:
        """Return the step's id."""
        return self.step.id

    @property
    def state(self) -> str:
        """Return the step's state."""
        return str(self.step.state)


@dataclasses.dataclass
class FlowNode:
    """A box of the flow graph: a step (``kind == "step"``), or a sequence or concurrence of
    boxes."""

    kind: str
    children: list[FlowNode] = dataclasses.field(default_factory=list)
    step: StepView | None = None


@dataclasses.dataclass(frozen=True)
class TimelineBar:
    """One step's bar on the timeline, in percent of the plan's span."""

    step: StepView
    row: int
    left: float
    width: float
    title: str


@dataclasses.dataclass
class PlanView:
    """A plan page's content."""

    plan: ExecutionPlan
    steps: dict[int, StepView]
    run_flow: FlowNode | None
    finalize_flow: FlowNode | None
    timeline: list[TimelineBar]
    timeline_span: str
    root_class: str | None
    caller: tuple[str, int] | None
    can_resume: bool
    can_cancel: bool
    can_halt: bool
    hidden_classes: list[str]
    progress: float


def _hidden(step: Step) -> bool:
    action = step.action
    return action is not None and bool(getattr(action.action_class, "_placeholder", False))


def _step_view(plan: ExecutionPlan, step: Step) -> StepView:
    running_plan = plan.state == PlanState.RUNNING
    run_step = step.phase == Phase.RUN
    return StepView(
        step=step,
        name=short_class(step.action_class_name),
        hidden=_hidden(step),
        skippable=plan.state == PlanState.PAUSED and run_step and step.state == StepState.ERROR,
        cancellable=running_plan and run_step and step.state in _LIVE_STEP,
        takes_events=plan.state != PlanState.STOPPED and run_step and step.state in _LIVE_STEP,
    )


def _flow_node(flow: Flow, steps: dict[int, StepView]) -> FlowNode | None:
    if isinstance(flow, Atom):
        view = steps.get(flow.step_id)
        return FlowNode("step", step=view) if view is not None else None
    kind = "sequence" if isinstance(flow, Sequence) else "concurrence"
    assert isinstance(flow, Sequence | Concurrence)
    children = [node for node in (_flow_node(sub, steps) for sub in flow.flows) if node]
    if not children:
        return None
    if len(children) == 1:
        return children[0]
    return FlowNode(kind, children)


def _timeline(
    plan: ExecutionPlan, steps: dict[int, StepView], now: datetime
) -> tuple[list[TimelineBar], str]:
    timed = [
        view
        for view in steps.values()
        if view.step.phase != Phase.PLAN and view.step.started_at is not None
    ]
    if not timed:
        return [], ""
    timed.sort(key=lambda view: (view.step.started_at, view.step.id))
    begin = min(view.step.started_at for view in timed if view.step.started_at)
    ends = [view.step.ended_at or now for view in timed]
    end = max(ends)
    span = max((end - begin).total_seconds(), 1e-6)
    bars = []
    for row, (view, ended) in enumerate(zip(timed, ends, strict=True)):
        started = view.step.started_at
        assert started is not None
        left = (started - begin).total_seconds() / span * 100
        width = max((ended - started).total_seconds() / span * 100, 0.4)
        title = (
            f"{view.step.id} {view.name} ({view.state}): "
            f"{duration((ended - started).total_seconds())}"
        )
        bars.append(TimelineBar(view, row, round(left, 3), round(min(width, 100 - left), 3), title))
    return bars, duration(span)


def describe_plan(plan: ExecutionPlan, now: datetime) -> PlanView:
    """Return what ``plan``'s page shows (``now``: where running steps' bars end)."""
    steps = {step_id: _step_view(plan, step) for step_id, step in sorted(plan.steps.items())}
    timeline, span = _timeline(plan, steps, now)
    root = plan.actions.get(plan.root_action_id or 1)
    hidden = sorted(
        {
            view.step.action_class_name
            for view in steps.values()
            if view.hidden and view.step.action is not None
        }
    )
    live = any(
        view.step.state in _LIVE_STEP for view in steps.values() if view.step.phase == Phase.RUN
    )
    return PlanView(
        plan=plan,
        steps=steps,
        run_flow=_flow_node(plan.run_flow, steps),
        finalize_flow=_flow_node(plan.finalize_flow, steps),
        timeline=timeline,
        timeline_span=span,
        root_class=root.action_class_name if root is not None else None,
        caller=plan.caller if plan.valid else None,
        can_resume=plan.state == PlanState.PAUSED,
        can_cancel=plan.state == PlanState.RUNNING and live,
        can_halt=plan.state not in (PlanState.STOPPED, PlanState.PENDING),
        hidden_classes=hidden,
        progress=plan.progress() if plan.valid else 0.0,
    )


def describe_step(plan: ExecutionPlan, step_id: int) -> StepView | None:
    """Return one step of ``plan`` as its page shows it (None if the plan has no such step)."""
    step = plan.steps.get(step_id)
    return None if step is None else _step_view(plan, step)
