"""Delayed and chained plans in `pydynflow.testing.InThreadWorld`: `delay` and `chain` store
them as a `World` does; the in-thread world plans and runs each in the calling thread once
it is due by its `ManagedClock`, or once the plans it is chained after have stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydynflow.action import Action
from pydynflow.clock import ClockClosedError, Timer, wall_time
from pydynflow.delayed import timeout_message
from pydynflow.plan import ExecutionPlan
from pydynflow.scheduling.lifecycle import plan_due, stop_delayed

if TYPE_CHECKING:
    from pydynflow.storage import Storage
    from pydynflow.testing.clock import ManagedClock
    from pydynflow.world import World

__all__ = ["InThreadScheduling"]

BATCH = 100
"""Due delayed plans read at a time."""


class InThreadScheduling:
    """`delay` and `chain` of an `InThreadWorld` (see the module)."""

    # What it uses of `InThreadWorld`.
    client: World
    clock: ManagedClock
    _stopped: bool
    _due_timer: Timer | None = None

    if TYPE_CHECKING:

        @property
        def storage(self) -> Storage: ...
        def _check_open(self, what: str) -> None: ...
        def _start(self, plan: ExecutionPlan, *, resume: bool = False) -> Any: ...

    def delay(
        self,
        action_class: type[Action],
        options: Mapping[str, Any] | None,
        *args: Any,
        **kwargs: Any,
    ) -> ExecutionPlan:
        """Store a delayed plan (see `World.delay`) and return it as stored, ``scheduled``.

        It is planned and run here, in this thread: at once if it is due now (no
        ``start_at``, or one already past), else when ``world.clock`` reaches its
        ``start_at`` (``world.clock.advance(...)``); it is stopped with an error if the
        clock passes its ``start_before`` first. A frozen plan waits until thawed
        (``world.client.set_delayed_frozen``, then `run_due`).
        """
        self._check_open("delay")
        plan = self.client.delay(action_class, options, *args, **kwargs)
        self.run_due()
        return plan

    def chain(
        self,
        plan_ids: str | Sequence[str],
        action_class: type[Action],
        *args: Any,
        **kwargs: Any,
    ) -> ExecutionPlan:
        """Store a plan run once every plan of ``plan_ids`` has stopped (see `World.chain`)
        and return it as stored; it runs here as soon as they have (at once if they have)."""
        self._check_open("chain")
        plan = self.client.chain(plan_ids, action_class, *args, **kwargs)
        self.run_due()
        return plan

    def run_due(self) -> None:
        """Plan and run, in this thread, every delayed plan due by ``world.clock`` whose
        prerequisites have stopped; stop those past their ``start_before``; arm a timer on
        the clock for the next one to come. The world calls it after each delay, chain and
        finished plan, and when that timer fires."""
        if self._stopped:
            return
        storage = self.storage
        now = wall_time(self.clock)
        while True:
            ready = storage.ready_delayed_plans(now, limit=BATCH)
            if not ready:
                break
            for due in ready:
                if due.start_before is not None and due.start_before <= now:
                    stop_delayed(
                        self.client,
                        due.plan_id,
                        error=timeout_message(due.start_before),
                        notice="timeout",
                    )
                elif storage.claim_delayed_plans([due.plan_id]):
                    plan_due(self.client, due, start=self._start)
        self._arm_next(storage.next_delayed_start(now), now)

    def _stop_scheduling(self) -> None:
        """Disarm the timer of the next delayed plan (the world stops)."""
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None

    def _arm_next(self, upcoming: datetime | None, now: datetime) -> None:
        self._stop_scheduling()
        if upcoming is None:
            return
        with suppress(ClockClosedError):  # the world is stopping
            delay = max((upcoming - now).total_seconds(), 0.0)
            self._due_timer = self.clock.schedule(delay, self.run_due)
