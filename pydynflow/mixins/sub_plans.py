"""`WithSubPlans`: a parent action that triggers sub-plans in batches and waits for them
(Dynflow's ``Action::V2::WithSubPlans``), suspended while they run.

The counts live in the database: the parent counts its sub-plans there (one grouped query
over the caller index) each time it wakes, so they are right after a restart and when the
sub-plans run on other executor processes. The parent wakes when a sub-plan stops or
pauses (the commit that stores it sends the parent a `Ping`, see `wake_caller`), and every
`polling_interval` seconds in case such a wake-up was lost with a process.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydynflow.action import Action
from pydynflow.errors import DynflowError
from pydynflow.events import Abort, Cancel, Ping, Poll
from pydynflow.logging import get_logger
from pydynflow.mixins.cancellable import Cancellable
from pydynflow.plan import utcnow
from pydynflow.states import PlanState

if TYPE_CHECKING:
    from pydynflow.hooks import HookCalls
    from pydynflow.plan import ExecutionPlan
    from pydynflow.storage.sub_plans import SubPlanCounts
    from pydynflow.triggered import Triggered

__all__ = ["SubPlanFailed", "WithSubPlans", "wake_caller"]


class SubPlanFailed(DynflowError):
    """Raised by a `WithSubPlans` parent once its sub-plans stopped and some failed."""


class WithSubPlans(Cancellable):
    """A parent action whose run step creates sub-plans in batches and waits for them all.

    Define `total_count` and `create_sub_plans` (which calls `trigger_sub_plan` once for
    each item of `current_batch`), and `batch` if the items are not ``0..total_count-1``.
    The run step holds no thread while the sub-plans run. Its output keeps
    ``total_count``, ``planned_count``, ``success_count``, ``failed_count``,
    ``pending_count`` and ``cancelled_count``; it succeeds once every sub-plan succeeded,
    and fails (its `rescue` policy applies) once all stopped and some failed. `cancel` of
    the parent plan passes `Cancel` (``force=True``: `Abort`) to the running sub-plans and
    creates no more.

    Class attributes: ``batch_size`` (sub-plans created per turn), ``concurrency_limit``
    (at most that many sub-plans created and not finished at once; None: no limit) and
    ``polling_interval`` (seconds between counts when no sub-plan woke the parent).
    """

    batch_size: ClassVar[int] = 100
    concurrency_limit: ClassVar[int | None] = None
    polling_interval: ClassVar[float] = 15.0

    _triggered: int = 0  # sub-plans triggered by this call of create_sub_plans
    # Its run triggers sub-plans through the world (`pydynflow.action.runs_in_world`): under
    # executor="processes" it runs on a thread of the world's process.
    _runs_in_world: ClassVar[bool] = True

    # -- to define --------------------------------------------------------------------

    def total_count(self) -> int:
        """Return how many sub-plans to create in all."""
        raise NotImplementedError(f"{self.class_name()} must define total_count()")

    def create_sub_plans(self) -> Any:
        """Trigger one sub-plan for each item of `current_batch` with `trigger_sub_plan`."""
        raise NotImplementedError(f"{self.class_name()} must define create_sub_plans()")

    def batch(self, start: int, size: int) -> list[Any]:
        """Return the items ``start .. start + size - 1`` (by default their indexes)."""
        return list(range(start, min(start + size, self.total_count())))

    def on_finish(self) -> None:
        """Called once every sub-plan succeeded, before the run step succeeds."""

    def on_planning_finished(self) -> None:
        """Called once the last batch was created (or cancel made it the last)."""

    # -- helpers ----------------------------------------------------------------------

    def trigger_sub_plan(self, action_class: type[Action], *args: Any, **kwargs: Any) -> Triggered:
        """Plan and execute ``action_class(*args, **kwargs)`` as a sub-plan of this action."""
        world = self.world
        if world is None or not hasattr(world, "trigger_with_caller"):
            raise DynflowError(
                f"{self.class_name()}: trigger_sub_plan() needs the world running this step "
                "(from its run step)"
            )
        triggered = world.trigger_with_caller(action_class, args, kwargs, caller_action=self)
        self._triggered += 1
        return triggered  # type: ignore[no-any-return]

    def current_batch(self) -> list[Any]:
        """Return the items of the batch to create now (Dynflow's ``current_batch``)."""
        start = int(self.output.get("planned_count", 0))
        size = self.batch_size
        capacity = self.concurrency_limit_capacity()
        if capacity is not None:
            size = min(size, capacity)
        size = max(0, min(size, self.output["total_count"] - start))
        return self.batch(start, size) if size else []

    def concurrency_limit_capacity(self) -> int | None:
        """Return how many more sub-plans may start now under `concurrency_limit` (None
        without a limit)."""
        limit = self.concurrency_limit
        if limit is None:
            return None
        output = self.output
        running = output.get("planned_count", 0) - self._finished_count()
        return max(0, limit - running)

    def can_spawn_next_batch(self) -> bool:
        """Return whether sub-plans remain to be created (none once cancelled)."""
        return self.remaining_count() > 0

    def remaining_count(self) -> int:
        """Return how many sub-plans remain to be created."""
        output = self.output
        if output.get("cancelled_at") or "total_count" not in output:
            return 0
        return int(output["total_count"]) - int(output.get("planned_count", 0))

    def run_progress(self) -> float:
        """Return the share of sub-plans that finished (0.1 before they are counted)."""
        total = self.output.get("total_count")
        if not total or "success_count" not in self.output:
            return 0.1
        return min(1.0, (self._finished_count() + self.output.get("cancelled_count", 0)) / total)

    # -- the run step -----------------------------------------------------------------

    def run(self, event: Any = None) -> None:
        """Create sub-plans batch by batch and wait for them (Dynflow v2's ``run``)."""
        if event is None:
            self._start_or_resume()
            arm_poll = True
        elif isinstance(event, (Ping, Poll)):
            self._tick()
            arm_poll = isinstance(event, Poll)  # the one poll timer re-arms itself
        elif isinstance(event, (Cancel, Abort)):
            self._cancel_sub_plans(force=isinstance(event, Abort))
            arm_poll = False
        else:
            raise DynflowError(f"{self.class_name()}: unrecognized event {event!r}")
        if self._try_to_finish():
            return
        if self.can_spawn_next_batch() and self.concurrency_limit_capacity() != 0:
            self.plan_event(Ping())  # the next batch in its own turn: counts stored between
        if arm_poll:
            self.plan_event(Poll(), self.polling_interval)
        self.suspend()

    def cancel(self) -> None:
        """Pass `Cancel` to the running sub-plans and create no more (see `run`)."""
        self._cancel_sub_plans(force=False)

    def abort(self) -> None:
        """Pass `Abort` to the running sub-plans and create no more (see `run`)."""
        self._cancel_sub_plans(force=True)

    # -- internals --------------------------------------------------------------------

    def _start_or_resume(self) -> None:
        output = self.output
        counts = self._count()
        if "total_count" not in output and counts.total == 0:
            self._initiate()
        elif counts.total and counts.failed == counts.total and self._all_failed_in_plan():
            # Nothing was planned successfully: start over with new sub-plans (Dynflow).
            output["resumed_count"] = counts.total
            for key in ("success_count", "failed_count", "pending_count", "cancelled_count"):
                output.pop(key, None)
            self._initiate()
        else:
            output.setdefault("total_count", self.total_count())
            self._tick(counts)

    def _initiate(self) -> None:
        self.output["total_count"] = self.total_count()
        self.output["planned_count"] = 0
        self.output["cancelled_count"] = 0
        self._tick(self._count())

    def _tick(self, counts: SubPlanCounts | None = None) -> None:
        self._recalculate(counts or self._count())
        if self.can_spawn_next_batch() and self.concurrency_limit_capacity() != 0:
            self._spawn()
            self._recalculate(self._count())  # those that failed in planning: done already

    def _spawn(self) -> None:
        batch_size = len(self.current_batch())
        self._triggered = 0
        self.create_sub_plans()
        if batch_size and not self._triggered:
            raise DynflowError(
                f"{self.class_name()}: create_sub_plans() triggered no sub-plan for a batch "
                f"of {batch_size} (call trigger_sub_plan() once per item of current_batch())"
            )
        output = self.output
        output["planned_count"] = int(output.get("planned_count", 0)) + self._triggered
        output["pending_count"] = output["total_count"] - self._finished_count()
        if not self.can_spawn_next_batch():
            self.on_planning_finished()

    def _count(self, ended_after: datetime | None = None) -> SubPlanCounts:
        storage = self._storage()
        return storage.sub_plan_counts(  # type: ignore[no-any-return]
            self.execution_plan_id, self.id, ended_after=ended_after
        )

    def _recalculate(self, counts: SubPlanCounts) -> None:
        """Set the counts from the database (Dynflow v2's ``recalculate_counts``)."""
        output = self.output
        resumed = int(output.get("resumed_count", 0))
        total = int(output["total_count"])
        cancelled_at = output.get("cancelled_at")
        cancelled_started = 0
        cancelled = 0
        if cancelled_at:
            since = datetime.fromisoformat(cancelled_at)
            cancelled_started = self._count(ended_after=since).failed_after + counts.cancelled
            cancelled = (total - (counts.total - resumed)) + cancelled_started
        failed = counts.failed + counts.cancelled - cancelled_started - resumed
        output["planned_count"] = counts.total - resumed  # every trigger stored its plan
        output["success_count"] = counts.success
        output["failed_count"] = max(0, failed)
        output["cancelled_count"] = cancelled
        output["pending_count"] = total - counts.success - max(0, failed) - cancelled_started

    def _finished_count(self) -> int:
        return int(self.output.get("success_count", 0)) + int(self.output.get("failed_count", 0))

    def _try_to_finish(self) -> bool:
        output = self.output
        if self.can_spawn_next_batch() or "success_count" not in output:
            return False
        finished = self._finished_count() + int(output.get("cancelled_count", 0))
        if output["total_count"] - finished > 0:
            return False
        if output.get("failed_count", 0) or output.get("cancelled_count", 0):
            raise SubPlanFailed("A sub task failed")
        self.on_finish()
        return True

    def _cancel_sub_plans(self, *, force: bool) -> None:
        output = self.output
        if "total_count" not in output:
            output["total_count"] = self.total_count()
        output.setdefault("cancelled_at", utcnow().isoformat())
        if output["total_count"] - int(output.get("planned_count", 0)) > 0:
            self.on_planning_finished()
        world = self.world
        for plan in self._sub_plans(state=PlanState.RUNNING):
            try:
                world.cancel(plan.id, force=force)
            except DynflowError as exc:  # it ended meanwhile
                get_logger(plan_id=self.execution_plan_id).info(
                    "sub-plan not cancelled", sub_plan_id=plan.id, error=str(exc)
                )
        self._recalculate(self._count())

    def _all_failed_in_plan(self) -> bool:
        return all(
            plan.state == PlanState.STOPPED and _failed_in_plan(plan) for plan in self._sub_plans()
        )

    def _sub_plans(self, state: Any = None) -> list[ExecutionPlan]:
        return self._storage().find_plans(  # type: ignore[no-any-return]
            state=state,
            caller_execution_plan_id=self.execution_plan_id,
            caller_action_id=self.id,
            limit=None,
        )

    def _storage(self) -> Any:
        world = self.world
        storage = getattr(world, "storage", None)
        if storage is None:
            raise DynflowError(
                f"{self.class_name()}: sub-plans need the world running this step "
                "(from its run step)"
            )
        return storage


def _failed_in_plan(plan: ExecutionPlan) -> bool:
    """Return whether ``plan`` failed while it was planned (a plan step holds an error)."""
    return any(step.phase == "plan" and step.error is not None for step in plan.steps.values())


def wake_caller(world: Any, calls: HookCalls) -> None:
    """Send `Ping` to the parent step of a sub-plan that stopped or paused.

    Called by the world's hook runner after the commit that stored the change, so the
    parent's count sees it. Optional: a parent that ended meanwhile drops it.
    """
    assert calls.caller is not None
    plan_id, action_id = calls.caller
    try:
        step_id = world.storage.run_step_of(plan_id, action_id)
        if step_id is None:
            return
        wake = getattr(world, "_wake_step", None)  # a `World`: not stored if it runs here
        if wake is not None:
            wake(plan_id, step_id, Ping())
        else:
            world.event(plan_id, step_id, Ping(), optional=True)
    except DynflowError as exc:
        world.log.warning(
            "sub-plan's caller not woken (its next poll counts it)",
            plan_id=calls.plan.id,
            caller=plan_id,
            error=str(exc),
        )
