"""`SchedulingMixin`: the `World` methods of delayed and chained plans (`World.delay`,
`World.chain`) and the world's delayed executor, kept out of ``world.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydynflow.action import Action
from pydynflow.actors.messages import ExecutePlan
from pydynflow.actors.pooled import tell_and_run
from pydynflow.clock import wall_time
from pydynflow.delayed import DelayOptions
from pydynflow.errors import UnknownPlan
from pydynflow.plan import ExecutionPlan
from pydynflow.planning import Planner
from pydynflow.promise import Promise
from pydynflow.scheduling.executor import LOCK_CLASS, LOCK_ID, DelayedExecutor
from pydynflow.scheduling.lifecycle import new_delayed_plan, stop_delayed
from pydynflow.states import PlanState, StepState
from pydynflow.storage.requests import world_inbox
from pydynflow.storage.singleton_lock import take_singleton_lock

if TYPE_CHECKING:
    from pydynflow.actors.hook_runner import HookRunner
    from pydynflow.actors.runtime import Runtime
    from pydynflow.dispatch import WorldRegistry
    from pydynflow.middleware import WorldMiddleware
    from pydynflow.storage import Storage

__all__ = ["SchedulingMixin"]


class SchedulingMixin:
    """Delayed plans (`delay`) and chains (`chain`) of a `World`, and its delayed executor.

    A delayed plan is stored ``scheduled`` (its root action's plan step only, and its
    arguments as JSON); the delayed executor of the database (one executor world with
    ``delayed_executor=True`` holds its lock) plans and executes it once it is due.
    """

    # What it uses of `World` (set by `World.__init__`).
    id: str
    name: str
    storage: Storage
    middleware: WorldMiddleware
    executor: bool | str
    queues: dict[str, int]
    delayed_executor: bool
    delayed_poll_interval: float
    log: Any
    _hooks: HookRunner
    _runtime: Runtime | None
    _registry: WorldRegistry
    _delayed: DelayedExecutor | None = None

    if TYPE_CHECKING:

        def _stored(self, plan_id: str) -> ExecutionPlan: ...
        def _require_executor(self, what: str) -> Any: ...
        def subscribed_actions(self, action_class: type[Action]) -> list[type[Action]]: ...

    # -- the API -------------------------------------------------------------------------

    def delay(
        self,
        action_class: type[Action],
        options: Mapping[str, Any] | None,
        *args: Any,
        **kwargs: Any,
    ) -> ExecutionPlan:
        """Store a plan of ``action_class(*args, **kwargs)`` to be planned and run later.

        ``options``: ``{"start_at": datetime | None, "start_before": datetime | None,
        "frozen": False}`` (aware datetimes; each key optional). The plan is stored
        ``scheduled`` with a "delay" history entry; the delayed executor plans and runs it
        once ``start_at`` has come (at once if None), or stops it with an error if it could
        not start before ``start_before``; a ``frozen`` plan waits until thawed
        (`set_delayed_frozen`). The arguments are stored as JSON by the action's ``delay``
        (through the ``delay`` middleware). Works from a client world too.

        Raises:
            ValueError: bad ``options``.
            SerializationError: an argument is not JSON-compatible (or what a custom
                ``delay`` raised): the plan is stored ``stopped`` with that error.
        """
        checked = DelayOptions.of(options)
        plan = new_delayed_plan(self, action_class, checked, args, kwargs)
        self._wake_delayed(plan.id, checked)
        return plan

    def chain(
        self,
        plan_ids: str | Sequence[str],
        action_class: type[Action],
        *args: Any,
        **kwargs: Any,
    ) -> ExecutionPlan:
        """Store a plan of ``action_class(*args, **kwargs)`` that is planned and run once
        every plan of ``plan_ids`` has stopped (a delayed plan, ``scheduled``).

        If one of them stopped with result ``error``, the plan stops with an error naming
        it ("... prerequisite execution plans failed"); a halted or warning prerequisite
        does not block it.

        Raises:
            UnknownPlan: one of ``plan_ids`` is not stored.
            ValueError: ``plan_ids`` is empty.
        """
        ids = [plan_ids] if isinstance(plan_ids, str) else [str(p) for p in plan_ids]
        if not ids:
            raise ValueError("chain needs the ids of the plans to wait for")
        for plan_id in ids:
            if not self.storage.plan_exists(plan_id):
                raise UnknownPlan(f"no execution plan has id {plan_id}")
        options = DelayOptions()
        plan = new_delayed_plan(self, action_class, options, args, kwargs, blocked_by=ids)
        self._wake_delayed(plan.id, options)
        return plan

    def set_delayed_frozen(
        self, plan_id: str, frozen: bool = True, *, start_at: datetime | None = None
    ) -> bool:
        """Freeze a delayed plan (it waits, whatever the time) or thaw it; ``start_at``
        moves its start too. Returns whether the plan is still waiting to be planned (it
        has a delayed record).

        Raises:
            UnknownPlan: no plan has this id.
            ValueError: ``start_at`` is not an aware datetime.
        """
        options = DelayOptions.of({"start_at": start_at, "frozen": frozen})
        if not self.storage.plan_exists(plan_id):
            raise UnknownPlan(f"no execution plan has id {plan_id}")
        found = self.storage.set_delayed_frozen(plan_id, frozen, start_at=start_at)
        if found and not frozen:
            self._wake_delayed(plan_id, options)
        return found

    # -- the delayed executor ------------------------------------------------------------

    def _start_delayed_executor(self) -> None:
        """Start the delayed executor of an executor world with ``delayed_executor``."""
        runtime = self._runtime
        if not (self.executor and self.delayed_executor) or runtime is None:
            return
        self._delayed = DelayedExecutor(
            self, runtime.clock, poll_interval=self.delayed_poll_interval
        )
        self._delayed.start()

    def _stop_delayed_executor(self, *, wait: bool = True) -> None:
        """Stop it (``wait``: for its poll in progress) and let its lock go."""
        delayed, self._delayed = self._delayed, None
        if delayed is not None:
            delayed.stop(wait=wait)

    def _wake_delayed(self, plan_id: str, options: DelayOptions) -> None:
        """Make sure the delayed executor looks at a plan just delayed (or thawed) by the
        time it is due: this world's own, or the lock holder's, asked through the database
        unless a poll is due by then anyway (another plan falls due first). Called after
        the plan's record is committed (see `DelayedExecutor`)."""
        if options.frozen:
            return
        storage, delayed = self.storage, self._delayed
        due = min((t for t in (options.start_at, options.start_before) if t), default=None)
        holder = storage.record_owner(LOCK_CLASS, LOCK_ID)
        if delayed is not None and holder in (None, self.id):
            delayed.poke(due)  # (a free lock: this world's takes it)
            return
        if holder is None or holder == self.id:
            return  # no delayed executor runs: the next one to start polls at its start
        moment = due or wall_time(self._runtime.clock if self._runtime else None)
        if not storage.delayed_poll_due_before(plan_id, moment):
            storage.post_request(world_inbox(holder), {"kind": "delayed"})

    def _poke_delayed(self) -> None:
        """A plan was delayed in another world: look for due plans now (a request)."""
        delayed = self._delayed
        if delayed is not None:
            delayed.poke()

    def _plan_delayed_root(
        self,
        plan: ExecutionPlan,
        action_class: type[Action],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        input: dict[str, Any],
    ) -> None:
        """Plan a delayed plan's root action into ``plan`` (``scheduled``), as `World.plan`
        plans, its root action's input starting from what its delay left there."""
        storage, world_id = self.storage, self.id
        planner = Planner(
            plan,
            world_id=world_id,
            subscriptions=self.subscribed_actions,
            singleton_lock=lambda name, plan_id: take_singleton_lock(
                storage, name, plan_id, world_id
            ),
            middleware=self.middleware.stack,
        )
        plan.world = self
        planner.plan_root(action_class, tuple(args), dict(kwargs), input=input)

    def _execute_fresh(self, plan: ExecutionPlan) -> Promise[None]:
        """Hand a just planned plan to this world's executor, which stores it with its
        start; return the promise of that commit."""
        executor = self._require_executor("planning a delayed plan")
        future: Promise[ExecutionPlan] = Promise()
        stored: Promise[None] = Promise()
        tell_and_run(executor, ExecutePlan(plan.id, plan, future, stored))
        return stored

    # -- cancel and halt -----------------------------------------------------------------

    def _cancel_scheduled(self, plan_id: str, note: dict[str, Any] | None) -> bool:
        """Cancel a plan still waiting to be planned: its plan step ``cancelled``, the plan
        ``stopped`` (result ``cancelled``), its delayed record deleted. Return False if it
        is not ``scheduled`` (any more)."""
        if self.storage.step_state(plan_id) != PlanState.SCHEDULED:
            return False
        stopped = stop_delayed(
            self,
            plan_id,
            step_state=StepState.CANCELLED,
            notice="Delayed task cancelled",
            note=("cancel", note),
        )
        return stopped is not None

    def _halt_scheduled(self, plan_id: str, note: dict[str, Any] | None) -> bool:
        """Halt a plan still waiting to be planned: ``stopped`` (result ``pending``), its
        delayed record deleted. Return False if it is not ``scheduled`` (any more)."""
        if self.storage.step_state(plan_id) != PlanState.SCHEDULED:
            return False
        return stop_delayed(self, plan_id, note=("halt", note)) is not None
