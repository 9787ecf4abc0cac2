"""What happens to a delayed plan: created ``scheduled``, planned when due, or stopped
(cancelled, halted, timed out, failed by a prerequisite).

Every change is written on the calling thread in one transaction with the plan's delayed
record (created or deleted with it), the stopping ones conditional on the plan's state, so
that a plan the delayed executor claimed meanwhile is left to it; the hooks of the change
go to the world's hook runner once it is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydynflow.action import PLAN, Action
from pydynflow.actors.persistence import changes, request_of
from pydynflow.delayed import ArgsSerializer, DelayOptions, failed_dependencies_message
from pydynflow.errors import DynflowError
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, utcnow
from pydynflow.planning import Planner
from pydynflow.registry import class_name
from pydynflow.serialization import normalize
from pydynflow.states import Phase, PlanState, StepState
from pydynflow.storage.delayed import DueDelayedPlan
from pydynflow.storage.requests import executor_inbox
from pydynflow.storage.writer import write_requests

if TYPE_CHECKING:
    from pydynflow.promise import Promise
    from pydynflow.scheduling.mixin import SchedulingMixin

__all__ = ["new_delayed_plan", "plan_due", "stop_delayed", "write_now"]

_ERROR_CLASS = class_name(DynflowError)


def write_now(
    world: SchedulingMixin,
    plan: ExecutionPlan,
    *,
    claim: tuple[str, str] | None = None,
    after: Callable[[], Any] | None = None,
) -> bool:
    """Write ``plan`` whole (its row, steps and actions) in one transaction of this thread
    with ``after()``; queue its hooks once committed.

    ``claim``: ``(from_state, to_state)``: first move the plan's row from one state to the
    other, conditionally; if it is not in ``from_state``, write nothing and return False.
    """
    storage = world.storage
    plan.world = world
    message = changes(
        storage, plan=plan, new=True, steps=plan.steps.values(), actions=plan.actions.values()
    )
    with storage.transaction():
        if claim is not None and not storage.claim_plan(plan.id, (claim[0],), claim[1]):
            return False
        write_requests(storage, [request_of(message)], None if after is None else lambda _: after())
    if message.hooks is not None:
        world._hooks.submit(message.hooks)
    return True


def new_delayed_plan(
    world: SchedulingMixin,
    action_class: type[Action],
    options: DelayOptions,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    blocked_by: Sequence[str] = (),
) -> ExecutionPlan:
    """Store a ``scheduled`` plan of ``action_class``: its root plan step only, and its
    delayed record with the arguments ``action_class.delay`` serialized (through the
    ``delay`` middleware). Return it.

    Raises:
        Exception: what serializing the arguments (or the ``delay`` middleware) raised;
            the plan is stored ``stopped`` with that error on its plan step.
    """
    plan = Planner.new_plan(action_class)  # checks the class, labels the plan
    name = class_name(action_class)
    record = ActionRecord(1, plan.id, name, plan_step_id=1)
    step = Step(1, plan.id, 1, name, Phase.PLAN, StepState.SCHEDULING, action=record)
    plan.actions[1], plan.steps[1], plan.root_plan_step_id = record, step, 1
    action = action_class(id=1, execution_plan_id=plan.id, phase=PLAN)
    action.world, action.plan_step_id = world, 1
    step.started_at = utcnow()
    dumped: list[dict[str, Any]] = []

    def inner(options: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        serializer = action.delay(options, *args, **kwargs)
        dumped.append(_serializer_of(action_class, serializer).dump())
        return serializer

    failure: Exception | None = None
    try:
        returned = world.middleware.execute(
            "delay", action, inner, options.to_dict(), *args, **kwargs
        )
        data = dumped[-1] if dumped else _serializer_of(action_class, returned).dump()
        record.input = normalize(action.input, owner=action_class, field="input")
        step.transition(StepState.PENDING)
    except Exception as exc:
        failure = exc
        step.state, step.error = StepState.ERROR, StepError.from_exception(exc)
    step.ended_at = utcnow()
    if failure is not None:
        plan.transition(PlanState.STOPPED, world.id)
        write_now(world, plan)
        raise failure
    plan.transition(PlanState.SCHEDULED, world.id)
    write_now(
        world,
        plan,
        after=lambda: world.storage.add_delayed_plan(
            plan.id,
            start_at=options.start_at,
            start_before=options.start_before,
            frozen=options.frozen,
            args=data,
            blocked_by=blocked_by,
        ),
    )
    return plan


def _serializer_of(action_class: type[Action], returned: Any) -> ArgsSerializer:
    """Return what ``action_class.delay`` returned as an `ArgsSerializer`."""
    if isinstance(returned, ArgsSerializer):
        return returned
    if isinstance(returned, tuple | list):
        return ArgsSerializer(returned)
    raise DynflowError(
        f"{class_name(action_class)}.delay must return an ArgsSerializer or a tuple of the "
        f"arguments to plan with, not {type(returned).__name__}"
    )


def stop_delayed(
    world: SchedulingMixin,
    plan_id: str,
    *,
    from_state: PlanState = PlanState.SCHEDULED,
    step_state: StepState | None = None,
    error: str | None = None,
    notice: str | None = None,
    note: tuple[str, dict[str, Any] | None] | None = None,
) -> ExecutionPlan | None:
    """Stop a delayed plan still in ``from_state`` and delete its delayed record; return
    it, or None if it was not in that state (planned, run or stopped by someone else).

    Its root plan step moves to ``step_state`` (``cancelled``), or to ``error`` with the
    message ``error``; the history entry of the stop is ``notice`` (default: "finish
    execution"), after ``note`` (``(name, details)``: who asked) if given.
    """
    plan = world._stored(plan_id)
    if plan.state != from_state:
        return None
    root = plan.root_plan_step
    if note is not None:
        plan.note(note[0], world.id, note[1])
    if root is not None and root.state in (StepState.SCHEDULING, StepState.PENDING):
        if error is not None:
            root.transition(StepState.ERROR)
            root.error = StepError(_ERROR_CLASS, error)
        elif step_state is not None:
            root.transition(step_state)
    plan.transition(PlanState.STOPPED, world.id, notice=notice)
    stopped = write_now(
        world,
        plan,
        claim=(from_state.value, PlanState.STOPPED.value),
        after=lambda: world.storage.delete_delayed_plans([plan_id]),
    )
    return plan if stopped else None


def plan_due(
    world: SchedulingMixin,
    due: DueDelayedPlan,
    start: Callable[[ExecutionPlan], Any] | None = None,
) -> Promise[None] | None:
    """Plan a delayed plan this world claimed (``planning``) and hand it to this world's
    executor; return the promise of its first commit (then its delayed record may go), or
    None if it was stored otherwise, its record deleted: stopped (a failed prerequisite,
    planning failed), or planned and handed to the executors serving its queue.

    ``start(plan)``: how a planned plan, stored ``planned`` with its record deleted, is
    executed instead (`pydynflow.testing.InThreadWorld` runs it in the calling thread).
    """
    stored = world._stored(due.plan_id)
    failed = world.storage.failed_prerequisites(due.plan_id)
    if failed:
        stop_delayed(
            world,
            due.plan_id,
            from_state=PlanState.PLANNING,
            error=failed_dependencies_message(failed),
            notice="failed-dependency",
        )
        return None
    root = stored.root_plan_step
    record = None if root is None else stored.actions.get(root.action_id)
    if record is None:
        stop_delayed(
            world,
            due.plan_id,
            from_state=PlanState.PLANNING,
            error="the delayed plan has no root action to plan",
        )
        return None
    try:
        args, kwargs = ArgsSerializer.load(due.args)
    except Exception as exc:
        stop_delayed(
            world,
            due.plan_id,
            from_state=PlanState.PLANNING,
            error=f"its arguments cannot be loaded: {type(exc).__name__}: {exc}",
        )
        return None
    plan = ExecutionPlan(
        id=stored.id, label=stored.label, state=PlanState.SCHEDULED, history=list(stored.history)
    )
    world._plan_delayed_root(plan, record.action_class, args, kwargs, dict(record.input))
    if start is None and plan.state == PlanState.PLANNED and plan.queue in world.queues:
        return world._execute_fresh(plan)
    # Failed planning: stopped. A queue this world does not serve: stored planned, then
    # handed to the executors that serve it (the plan waits planned until one is alive).
    written = write_now(
        world,
        plan,
        claim=(PlanState.PLANNING.value, plan.state.value),
        after=lambda: world.storage.delete_delayed_plans([plan.id]),
    )
    if written and plan.state == PlanState.PLANNED and start is not None:
        start(plan)
    elif written and plan.state == PlanState.PLANNED:
        world.storage.post_request(
            executor_inbox(plan.queue),
            {"kind": "execute", "plan_id": plan.id, "note": None, "quiet": True},
        )
    return None
