"""The plan phase: run ``Action.plan`` depth-first and build steps and flows as Dynflow does.

Planning keeps a stack of flows. Each action's ``plan()`` runs inside a fresh
`Concurrence`; ``sequence()`` / ``concurrence()`` push nested flows. When a flow is closed it
is added to the enclosing one with `ComposedFlow.add_and_resolve`, which puts it in sequence
after any sibling flow holding a step it references (output references in its input). The
first error stops planning: the failing plan step and all its callers end in ``error``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydynflow.action import PLAN, Action
from pydynflow.errors import PlanningError, SerializationError
from pydynflow.flows import Atom, ComposedFlow, Concurrence, Flow, Sequence
from pydynflow.middleware import Stack, call
from pydynflow.mixins.singleton import already_active, is_singleton
from pydynflow.plan import ActionRecord, ExecutionPlan, Step, StepError, new_plan_id, utcnow
from pydynflow.references import has_references, iter_references
from pydynflow.registry import class_name, subscribed_actions
from pydynflow.serialization import normalize
from pydynflow.states import Phase, PlanState, Result, StepState

_DEFAULT_PLAN = Action.plan


class DependencyGraph:
    """Which steps each planned run step still has to be sequenced after."""

    def __init__(self) -> None:
        self._required: dict[int, list[int]] = {}
        self.pending = 0  # dependencies recorded and not yet satisfied

    def add_dependencies(self, step_id: int, action: Action) -> None:
        """Record the run steps referenced by ``action``'s input as needed by ``step_id``."""
        if not has_references(action._input):
            return
        for reference in iter_references(action._input):
            required = self._required.setdefault(step_id, [])
            if reference.step_id not in required:
                required.append(reference.step_id)
                self.pending += 1

    def required_step_ids(self, step_id: int) -> list[int]:
        """Return the step ids ``step_id`` still waits for."""
        return self._required.get(step_id, [])

    def mark_satisfied(self, step_id: int, required_step_id: int) -> None:
        """Forget a dependency that the flow structure now guarantees."""
        required = self._required.get(step_id)
        if required and required_step_id in required:
            required.remove(required_step_id)
            self.pending -= 1

    def unresolved(self) -> dict[int, list[int]]:
        """Return the dependencies no flow satisfied (step id -> required step ids)."""
        return {step: list(req) for step, req in self._required.items() if req}


_phases: dict[type, tuple[bool, bool]] = {}


def phases_of(action_class: type[Action]) -> tuple[bool, bool]:
    """Return whether ``action_class`` has a run phase and a finalize phase (cached)."""
    found = _phases.get(action_class)
    if found is None:
        found = _phases[action_class] = (action_class.has_run(), action_class.has_finalize())
    return found


def plan_label(action_class: type[Action]) -> str:
    """Return the label of a plan of ``action_class``: its ``label``, or ``"module.QualName"``.

    Raises:
        PlanningError: ``label`` is neither a str nor None.
    """
    label = action_class.label
    if label is None:
        return class_name(action_class)
    return _plain_str(action_class, "label", label) or class_name(action_class)


# The checks below make a class attribute a plain builtin: a step's fields go pickled to the
# writer process, which cannot load the user's classes (a str enum, an IntEnum...).


def _plain_str(action_class: type[Action], attribute: str, value: object) -> str:
    if not isinstance(value, str):
        raise PlanningError(f"{class_name(action_class)}: {attribute} must be a str, got {value!r}")
    return str.__str__(value)  # a str enum's value, where str() would give "Kind.A"


def _plain_weight(action_class: type[Action], attribute: str, value: object) -> int | float:
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__float__(value)
    raise PlanningError(f"{class_name(action_class)}: {attribute} must be a number, got {value!r}")


class Planner:
    """Build one execution plan by running the plan phase of its root action.

    ``singleton_lock(action_class_name, plan_id)`` takes the lock of a `Singleton` action
    class for the plan and returns the plan holding it (see
    `pydynflow.storage.singleton_lock`); without it (no database), no lock is taken.
    ``middleware(action_class)`` returns the `Stack` wrapping a class's ``plan`` and, for
    the root's class, the whole phase (``plan_phase``); without it, none does.
    """

    def __init__(
        self,
        plan: ExecutionPlan,
        *,
        world_id: str | None = None,
        subscriptions: Callable[[type[Action]], list[type[Action]]] = subscribed_actions,
        singleton_lock: Callable[[str, str], str | None] | None = None,
        middleware: Callable[[type[Action]], Stack] | None = None,
    ) -> None:
        self.plan = plan
        self.world_id = world_id
        self._subscriptions = subscriptions
        self._singleton_lock = singleton_lock
        self._middleware = middleware
        self._graph = DependencyGraph()
        self._root_flow = Concurrence()
        self._stack: list[ComposedFlow] = [self._root_flow]
        self._next_step_id = 1
        self._next_action_id = 1

    @classmethod
    def new_plan(cls, action_class: type[Action], plan_id: str | None = None) -> ExecutionPlan:
        """Return an empty ``pending`` plan labelled after ``action_class``."""
        if not (isinstance(action_class, type) and issubclass(action_class, Action)):
            raise PlanningError(f"expected an Action subclass, got {action_class!r}")
        return ExecutionPlan(id=plan_id or new_plan_id(), label=plan_label(action_class))

    # -- the whole phase -----------------------------------------------------------------

    def plan_root(
        self,
        action_class: type[Action],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        caller: tuple[str, int] | None = None,
        input: dict[str, Any] | None = None,
    ) -> ExecutionPlan:
        """Plan ``action_class(*args, **kwargs)`` as the root action; return the plan.

        The plan ends ``planned``, or ``stopped`` with result ``error`` if planning failed.
        ``input``: what the root action's input holds before its ``plan()`` runs (a delayed
        plan's, as its ``delay`` middleware left it).
        """
        plan = self.plan
        plan.transition(PlanState.PLANNING, self.world_id)
        step, action = self._add_plan_step(action_class, parent=None)
        if input:
            action._input.update(input)
        if caller is not None:
            action.caller_execution_plan_id, action.caller_action_id = caller
            plan.has_hooks = True  # its stop wakes its caller (`pydynflow.hooks`)
        plan.root_plan_step_id = step.id
        try:
            hooks = self._middleware(action_class).plan_phase if self._middleware else ()
            if hooks:
                inner = lambda _: self._plan_root_step(step, action, args, kwargs)  # noqa: E731
                call(hooks, "plan_phase", None, inner, plan)
            else:
                self._plan_root_step(step, action, args, kwargs)
        except Exception as exc:  # a plan_phase middleware failed
            if plan.result != Result.ERROR:
                step.state = StepState.ERROR
                step.error = StepError.from_exception(exc)
        run_flow: Flow = self._root_flow
        if self._root_flow.size() == 1:
            run_flow = self._root_flow.flows[0]
        plan.run_flow = run_flow
        failed = plan.result == Result.ERROR
        plan.transition(PlanState.STOPPED if failed else PlanState.PLANNED, self.world_id)
        return plan

    def _plan_root_step(
        self, step: Step, action: Action, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> None:
        try:
            self._execute_plan_step(step, action, args, kwargs or {}, trigger=None)
            unresolved = self._graph.unresolved()
            if unresolved:
                raise PlanningError(f"some output references were not resolved: {unresolved}")
        except Exception as exc:
            if self.plan.result != Result.ERROR:  # failed outside any plan step
                step.state = StepState.ERROR
                step.error = StepError.from_exception(exc)

    # -- called by Action ----------------------------------------------------------------

    def plan_child(
        self, parent: Action, action_class: type[Action], args: tuple[Any, ...], kwargs: dict
    ) -> Action:
        """Plan ``action_class`` as a child of ``parent`` and return the planned child."""
        if not (isinstance(action_class, type) and issubclass(action_class, Action)):
            raise PlanningError(
                f"{parent.class_name()}: plan_action expects an Action subclass, "
                f"got {action_class!r}"
            )
        step, action = self._add_plan_step(action_class, parent=parent)
        self._execute_plan_step(step, action, args, kwargs, trigger=parent)
        return action

    def add_own_steps(self, action: Action) -> None:
        """Add ``action``'s run step (if it has run) and finalize step (if it has finalize)."""
        if action.run_step_id is not None or action.finalize_step_id is not None:
            raise PlanningError(f"{action.class_name()}: plan_self() called twice")
        action_class = type(action)
        has_run, has_finalize = phases_of(action_class)
        if has_run:
            step = self._add_flow_step(action, Phase.RUN, action_class.run_progress_weight)
            action.run_step_id = step.id
            self._graph.add_dependencies(step.id, action)
            self._add_flow(Atom(step.id))
        if has_finalize:
            weight = action_class.finalize_progress_weight
            step = self._add_flow_step(action, Phase.FINALIZE, weight)
            action.finalize_step_id = step.id
            self.plan.finalize_flow.append(Atom(step.id))

    @contextmanager
    def sequence(self) -> Iterator[None]:
        """Collect the flows planned inside the block into a `Sequence`."""
        with self._switch_flow(Sequence()):
            yield

    @contextmanager
    def concurrence(self) -> Iterator[None]:
        """Collect the flows planned inside the block into a `Concurrence`."""
        with self._switch_flow(Concurrence()):
            yield

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _switch_flow(self, flow: ComposedFlow) -> Iterator[None]:
        self._stack.append(flow)
        try:
            yield
        finally:
            self._stack.pop()
            self._add_flow(flow)

    def _add_flow(self, flow: Flow) -> None:
        """Add ``flow`` to the current flow, in sequence after the flows it depends on.

        While no output reference waits to be resolved (the common case), there is nothing
        to look for: the flow is just added (what `add_and_resolve` would do).
        """
        if self._graph.pending:
            self._stack[-1].add_and_resolve(self._graph, flow)
        else:
            self._stack[-1].add(flow)

    def _add_plan_step(
        self, action_class: type[Action], parent: Action | None
    ) -> tuple[Step, Action]:
        plan = self.plan
        step_id, action_id = self._next_step_id, self._next_action_id
        self._next_step_id, self._next_action_id = step_id + 1, action_id + 1
        action = action_class(id=action_id, execution_plan_id=plan.id, phase=PLAN)
        action._planner = self
        action.plan_step_id = step_id
        record = ActionRecord(action_id, plan.id, class_name(action_class), plan_step_id=step_id)
        plan.actions[action_id] = record
        plan.steps[step_id] = Step(
            step_id, plan.id, action_id, record.action_class_name, Phase.PLAN, action=record
        )
        if parent is not None and parent.plan_step_id is not None:
            parent_step = plan.steps[parent.plan_step_id]
            if parent_step.children:
                parent_step.children.append(step_id)  # type: ignore[union-attr]
            else:
                parent_step.children = [step_id]
        return plan.steps[step_id], action

    def _add_flow_step(self, action: Action, phase: Phase, weight: int) -> Step:
        step_id = self._next_step_id
        self._next_step_id = step_id + 1
        record = self.plan.actions[action.id]
        queue = type(action).queue
        if type(queue) is not str:  # exact types pass with one check: this runs every step
            queue = _plain_str(type(action), "queue", queue)
        if type(weight) is not int:
            attribute = f"{phase}_progress_weight"
            weight = _plain_weight(type(action), attribute, weight)  # type: ignore[assignment]
        step = Step(
            step_id,
            self.plan.id,
            action.id,
            record.action_class_name,
            phase,
            queue=queue,
            progress_weight=weight,
            action=record,
        )
        self.plan.steps[step_id] = step
        return step

    def _take_step_id(self) -> int:
        step_id = self._next_step_id
        self._next_step_id += 1
        return step_id

    def _execute_plan_step(
        self,
        step: Step,
        action: Action,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        trigger: Action | None,
        from_subscription: bool = False,
    ) -> None:
        if from_subscription:
            action.trigger, action._from_subscription = trigger, True
        normalized = False
        step.state = StepState.RUNNING  # a plan step: pending -> running -> success or error
        step.started_at = utcnow()
        started = time.perf_counter()
        try:
            if self._singleton_lock is not None and is_singleton(type(action)):
                self._lock_singleton(self._singleton_lock, type(action))
            subscribers = self._subscriptions(type(action))
            hooks = self._middleware(type(action)).plan if self._middleware else ()
            if not subscribers and type(action).plan is _DEFAULT_PLAN:
                # Only `plan_self`: its steps go straight into the current flow. A fresh
                # concurrence holding just them would be unwrapped there all the same (most
                # actions of a plan are such leaves: this is planning's common case).
                if hooks:
                    call(hooks, "plan", action, action.plan, *args, **kwargs)
                else:
                    action.plan(*args, **kwargs)
            else:
                own_flow = Concurrence()
                stack = self._stack
                stack.append(own_flow)  # as _switch_flow, inline: this runs once per action
                try:
                    if hooks:
                        call(hooks, "plan", action, action.plan, *args, **kwargs)
                    else:
                        action.plan(*args, **kwargs)
                finally:
                    stack.pop()
                    self._add_flow(own_flow)
                if subscribers:
                    self._plan_subscribers(
                        action, subscribers, args, kwargs, added=bool(own_flow.flows)
                    )
            action._input = normalize(
                action._input, owner=type(action), field="input", allow_references=True
            )
            normalized = True
            step.state = StepState.SUCCESS
        except Exception as exc:
            if step.error is None:
                step.error = StepError.from_exception(exc)
            step.state = StepState.ERROR
            raise
        finally:
            step.ended_at = utcnow()
            step.execution_time = step.real_time = time.perf_counter() - started
            self._record(action, normalized)

    def _lock_singleton(
        self, lock: Callable[[str, str], str | None], action_class: type[Action]
    ) -> None:
        """Take the lock of a `Singleton` class before its plan runs (Dynflow's rule)."""
        name = class_name(action_class)
        holder = lock(name, self.plan.id)
        if holder != self.plan.id:
            raise PlanningError(already_active(name, holder))

    def _plan_subscribers(
        self,
        action: Action,
        subscribers: list[type[Action]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        added: bool,
    ) -> None:
        # The trigger's flow was added last to the current flow; put it in a concurrence with
        # its subscribers. Dynflow pops the last flow even when the trigger added none, which
        # would capture a sibling's flow: only pop what the trigger added.
        current = self._stack[-1]
        trigger_flows = [current.pop()] if added and current.flows else []
        with self._switch_flow(Concurrence(trigger_flows)):
            for subscriber in subscribers:
                step, child = self._add_plan_step(subscriber, parent=action)
                self._execute_plan_step(
                    step, child, args, kwargs, trigger=action, from_subscription=True
                )

    def _record(self, action: Action, normalized: bool) -> None:
        record = self.plan.actions[action.id]
        if normalized:
            record.input = action._input
        else:
            try:
                record.input = normalize(
                    action.input, owner=type(action), field="input", allow_references=True
                )
            except SerializationError:  # its plan step failed on it: store what Dynflow does
                record.input = {"not_serializable": True}
        record.run_step_id = action.run_step_id
        record.finalize_step_id = action.finalize_step_id
        record.caller_execution_plan_id = action.caller_execution_plan_id
        record.caller_action_id = action.caller_action_id


def plan_action(
    action_class: type[Action],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    plan_id: str | None = None,
    world_id: str | None = None,
    caller: tuple[str, int] | None = None,
) -> ExecutionPlan:
    """Plan ``action_class`` into a new execution plan (no storage involved)."""
    plan = Planner.new_plan(action_class, plan_id)
    return Planner(plan, world_id=world_id).plan_root(action_class, args, kwargs, caller=caller)
