"""`DelayedExecutor`: plans and executes each delayed plan of a database once it is due.

Every executor world with ``delayed_executor=True`` runs one, but only the holder of the
database's delayed-executor lock (a coordinator record owned by a world) plans: the others
try to take the lock every ``poll_interval`` seconds, and take it over once its holder is
dead or has stopped (`DelayedExecutor.stop` lets it go). The holder polls at its start,
every ``poll_interval`` seconds of the world's clock while a delayed plan waits (none
armed while none does), at the earliest ``start_at`` due before that, and when a plan is
delayed (here, or elsewhere: a request through the database). A poll claims each ready
plan (``scheduled`` -> ``planning``, a conditional update), plans it here and hands it to
this world's executor. The design: docs/guides/delayed-and-chained-plans.md.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydynflow.clock import Timer, wall_time
from pydynflow.delayed import timeout_message
from pydynflow.errors import PersistenceError
from pydynflow.scheduling.lifecycle import plan_due, stop_delayed
from pydynflow.states import PlanState
from pydynflow.storage.delayed import DueDelayedPlan
from pydynflow.storage.world_lock import world_is_dead

if TYPE_CHECKING:
    from pydynflow.promise import Promise
    from pydynflow.scheduling.mixin import SchedulingMixin

__all__ = ["BATCH_SIZE", "LOCK_CLASS", "LOCK_ID", "POLL_INTERVAL", "DelayedExecutor"]

LOCK_CLASS = "pydynflow.DelayedExecutorLock"
"""The coordinator record class of the delayed-executor lock (owner: the world holding it)."""
LOCK_ID = "delayed-executor"
"""The id of the one delayed-executor lock of a database."""
POLL_INTERVAL = 15.0
"""Seconds between two polls of a delayed executor (Dynflow's default)."""
BATCH_SIZE = 100
"""Ready plans claimed in one transaction, then planned one by one."""
COMMIT_WAIT = 60.0
"""Seconds to wait for the first commit of a plan handed to the executor before giving up
on deleting its delayed record (the next poll does it)."""


class DelayedExecutor:
    """The delayed executor of one executor world (a thread of its own, timers on the
    world's clock).

    Args:
        world: the executor world that plans and runs the due plans.
        clock: the world's clock: poll times, and the time plans fall due by
            (`pydynflow.clock.wall_time`).
        poll_interval: seconds between two polls.
        batch_size: ready plans claimed per transaction.
    """

    def __init__(
        self,
        world: SchedulingMixin,
        clock: Any,
        *,
        poll_interval: float = POLL_INTERVAL,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.world = world
        self.clock = clock
        self.poll_interval = float(poll_interval)
        self.batch_size = int(batch_size)
        self.log = world.log.bind(component="delayed-executor")
        self.holding = False
        """Whether this world held the lock at its last poll."""
        self.polls = 0
        """Polls finished so far."""
        self._requested = 0  # polls asked for (timers, pokes)
        self._pokes = 0  # pokes for a plan due later (they arm the regular poll)
        self._served = 0  # the polls asked for before the last finished poll began
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the timers
        self._polled = threading.Condition()
        self._tick: Timer | None = None
        self._soon: Timer | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"pydynflow-delayed-{world.id[:8]}", daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Poll now; the poll arms the next ones."""
        self._thread.start()
        self._request()

    def stop(self, *, wait: bool = True) -> None:
        """Stop polling and let the lock go; ``wait``: for the poll in progress to end
        (the plans it claimed and did not plan go back to ``scheduled``)."""
        self._stopping.set()
        with self._lock:
            timers = [self._tick, self._soon]
            self._tick = self._soon = None
        for timer in timers:
            if timer is not None:
                timer.cancel()
        self._wake.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if self.holding and wait:
            try:
                self.world.storage.delete_record(LOCK_CLASS, LOCK_ID, self.world.id)
            except PersistenceError as exc:  # it is void once this world is gone anyway
                self.log.warning("cannot let the delayed-executor lock go", error=str(exc))
            self.holding = False

    def poke(self, due: datetime | None = None) -> None:
        """Poll now, or at ``due`` if that is later (a plan delayed in this world)."""
        if self._stopping.is_set():
            return
        delay = 0.0 if due is None else (due - wall_time(self.clock)).total_seconds()
        if delay <= 0:
            self._request()
            return
        with self._lock:
            self._pokes += 1  # a poll ending now must not disarm the regular poll
        self._arm_tick(True)  # a plan waits now
        self._arm_soon(delay)

    def wait_for_poll(self, timeout: float) -> bool:
        """Wait until every poll asked for so far (by a timer that fired, a `poke`) has
        run; False on timeout. For tests that just moved a `ManagedClock`."""
        deadline = time.monotonic() + timeout
        with self._polled:
            target = self._requested
            while self._served < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._polled.wait(left)
        return True

    def _request(self) -> None:
        """Ask the thread for a poll (from any thread, a clock callback too: quick)."""
        with self._polled:
            self._requested += 1
        self._wake.set()

    # -- timers --------------------------------------------------------------------------

    def _arm_tick(self, wanted: bool, *, pokes: int | None = None) -> None:
        """Arm the next regular poll ``poll_interval`` seconds from now if ``wanted`` (or
        `poke` was called since it read ``pokes``) and none is armed; else disarm it."""
        with self._lock:
            tick = self._tick
            if pokes is not None and pokes != self._pokes:
                wanted = True
            if self._stopping.is_set() or not wanted:
                self._tick = None
                if tick is not None:
                    tick.cancel()
            elif tick is None or not tick.pending:
                self._tick = self.clock.schedule(self.poll_interval, self._request)

    def _arm_soon(self, delay: float) -> None:
        """Arm a poll ``delay`` seconds from now unless one comes sooner."""
        with self._lock:
            if self._stopping.is_set():
                return
            due = self.clock.now() + delay
            for timer in (self._tick, self._soon):
                if timer is not None and timer.pending and timer.due <= due:
                    return
            if self._soon is not None:
                self._soon.cancel()
            self._soon = self.clock.schedule(delay, self._request)

    # -- polling -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._polled:
                serving = self._requested  # a request from now on wakes the thread again
            if self._stopping.is_set():
                with self._polled:
                    self._served = serving
                    self._polled.notify_all()
                return
            try:
                self._poll()
            except PersistenceError as exc:  # the database is away: the next poll retries
                self.log.warning("delayed executor: database unavailable", error=str(exc))
                self._arm_tick(True)
            except Exception:
                self.log.exception("delayed executor: poll failed")
                self._arm_tick(True)
            finally:
                with self._polled:
                    self.polls += 1
                    self._served = serving
                    self._polled.notify_all()

    def _poll(self) -> None:
        storage = self.world.storage
        holding = self._elect()
        if holding != self.holding:
            self.holding = holding
            if holding:
                self.log.info("this world is the delayed executor of its database")
        if not holding:
            self._arm_tick(True)  # to take over once the holder is gone
            return
        with self._lock:
            pokes = self._pokes
        stale = storage.drop_stale_delayed_plans()
        if stale:
            self.log.info("dropped the delayed records of plans already planned", plans=stale)
        now = wall_time(self.clock)
        seen: set[str] = set()
        while not self._stopping.is_set():
            ready = storage.ready_delayed_plans(now, limit=self.batch_size)
            fresh = [due for due in ready if due.plan_id not in seen]
            if not fresh:
                break
            seen.update(due.plan_id for due in fresh)
            self._process(fresh, now)
            if len(ready) < self.batch_size:
                break
        # After the records of the plans done are deleted (see `SchedulingMixin`: a plan
        # delayed elsewhere meanwhile is seen here, or its world asks for a poll).
        upcoming = storage.next_delayed_start(now)
        self._arm_tick(storage.delayed_plans_waiting(), pokes=pokes)
        if upcoming is not None:
            self.poke(upcoming)

    def _elect(self) -> bool:
        """Take the delayed-executor lock unless a live world holds it; return whether this
        world holds it now."""
        world = self.world
        data = json.dumps({"world_id": world.id, "name": world.name}).encode()
        holder = world.storage.take_record(LOCK_CLASS, LOCK_ID, world.id, data, stale=self._void)
        if holder != world.id and self.holding:
            self.log.warning("another world took the delayed-executor lock", holder=holder)
        return holder == world.id

    def _void(self, holder: str | None, data: bytes | None) -> bool:
        """Return whether the lock's holder is gone: not registered, silent for longer than
        its validity timeout, or its process dead."""
        if holder is None:
            return True
        registry = self.world._registry
        found = {info.id: info for info in registry.worlds()}.get(holder)
        if found is None or not found.alive:
            return True
        return found.executor and world_is_dead(registry.storage, holder)

    def _process(self, batch: list[DueDelayedPlan], now: datetime) -> None:
        """Expire, claim, plan and execute one batch of ready plans."""
        world, storage = self.world, self.world.storage
        stuck = [due.plan_id for due in batch if due.state == PlanState.PLANNING]
        if stuck:  # claimed by a delayed executor that is gone: plan them again
            storage.unclaim_delayed_plans(stuck)
            self.log.warning(
                "delayed plans left planning by a stopped delayed executor", plans=stuck
            )
        waiting = []
        for due in batch:
            if due.start_before is not None and due.start_before <= now:
                stop_delayed(
                    world, due.plan_id, error=timeout_message(due.start_before), notice="timeout"
                )
            else:
                waiting.append(due)
        claimed = set(storage.claim_delayed_plans([due.plan_id for due in waiting]))
        pending: list[tuple[str, Promise[None]]] = []
        left: list[str] = []
        for due in waiting:
            if due.plan_id not in claimed:
                continue  # planned, cancelled or halted by someone else meanwhile
            if self._stopping.is_set():
                left.append(due.plan_id)
                continue
            try:
                stored = plan_due(world, due)
            except Exception:
                self.log.exception("planning a delayed plan failed", plan_id=due.plan_id)
                left.append(due.plan_id)
                continue
            if stored is not None:
                pending.append((due.plan_id, stored))
        if left:
            storage.unclaim_delayed_plans(left)
        done = []
        for plan_id, stored in pending:
            try:
                stored.result(COMMIT_WAIT)
            except Exception as exc:  # still "planning": the next poll plans it again
                self.log.error("a delayed plan was not stored", plan_id=plan_id, error=str(exc))
                continue
            done.append(plan_id)
        if done:
            storage.delete_delayed_plans(done)
