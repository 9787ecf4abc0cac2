"""`PlanCleaner`: deletes the stopped plans of a database that ended longer ago than a world's
``keep_plans_for``, at its start and then every ``cleaner_interval`` seconds of its clock.

Dynflow's ``ExecutionPlanCleaner``, on a thread of its own (a run may take seconds), woken by
a timer on the world's clock (``ManagedClock`` in tests). Several executor worlds may clean
one database at once: each batch takes its plans under the write lock, so a plan is deleted
once and the other world's batch finds it gone.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from typing import Any

from pydynflow.clock import Timer, wall_time
from pydynflow.errors import PersistenceError
from pydynflow.retention.deletion import delete_selected
from pydynflow.storage.retention import BATCH_SIZE, PlanSelection

__all__ = ["CLEANER_INTERVAL", "PlanCleaner"]

CLEANER_INTERVAL = 3600.0
"""Seconds between two runs of a world's plan cleaner, by default."""


class PlanCleaner:
    """The plan cleaner of one executor world.

    Args:
        storage: the world's storage.
        clock: the world's clock: when runs happen, and the time plans age by
            (`pydynflow.clock.wall_time`).
        keep_for: how long a stopped plan is kept after it ended.
        interval: seconds between two runs.
        backup: a JSON-lines file each run appends the plans it deletes to, or None.
        batch_size: plans deleted per transaction at most.
        log: the world's logger.
    """

    def __init__(
        self,
        storage: Any,
        clock: Any,
        *,
        keep_for: timedelta,
        interval: float = CLEANER_INTERVAL,
        backup: str | os.PathLike[str] | None = None,
        batch_size: int = BATCH_SIZE,
        log: Any,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.keep_for = keep_for
        self.interval = float(interval)
        self.backup = backup
        self.batch_size = batch_size
        self.log = log.bind(component="plan-cleaner")
        self.runs = 0
        """Runs finished so far."""
        self.deleted = 0
        """Plans deleted by its runs so far."""
        self._requested = 0  # runs asked for (the start, timers)
        self._served = 0  # the runs asked for before the last finished run began
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the timer
        self._ran = threading.Condition()
        self._timer: Timer | None = None
        self._thread = threading.Thread(target=self._run, name="pydynflow-cleaner", daemon=True)

    @property
    def timer(self) -> Timer | None:
        """The clock timer of the next run (None once stopped)."""
        return self._timer

    def start(self) -> None:
        """Clean now, then every ``interval`` seconds of the clock."""
        self._arm()
        self._thread.start()
        self._request()

    def stop(self, *, wait: bool = True) -> None:
        """Stop; ``wait``: for the run in progress to end (it stops after its current batch)."""
        self._stopping.set()
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._wake.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def clean(self) -> int:
        """Delete the stopped plans that ended more than ``keep_for`` ago; return how many."""
        before = wall_time(self.clock) - self.keep_for
        selection = PlanSelection(states=("stopped",), before=before)
        deleted = delete_selected(
            self.storage,
            selection,
            batch_size=self.batch_size,
            backup=self.backup,
            stop=self._stopping.is_set,
            log=self.log,
        )
        self.deleted += deleted
        return deleted

    def wait_for_run(self, timeout: float) -> bool:
        """Wait until every run asked for so far (at the start, by a timer that fired) has
        ended; False on timeout. For tests that just moved a `ManagedClock`."""
        deadline = time.monotonic() + timeout
        with self._ran:
            target = self._requested
            while self._served < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ran.wait(left)
        return True

    # -- internals ----------------------------------------------------------------------

    def _request(self) -> None:
        """Ask the thread for a run (from any thread, a clock callback too: quick)."""
        with self._ran:
            self._requested += 1
        self._wake.set()

    def _arm(self) -> None:
        """Arm the next run (fixed cadence: armed when the previous timer fires)."""
        with self._lock:
            if not self._stopping.is_set():
                self._timer = self.clock.schedule(self.interval, self._ticked)

    def _ticked(self) -> None:  # on the clock's thread: quick
        self._arm()
        self._request()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._ran:
                serving = self._requested  # a request from now on wakes the thread again
            try:
                if not self._stopping.is_set():
                    self._clean_logged()
            finally:
                with self._ran:
                    self._served = serving
                    self._ran.notify_all()
            if self._stopping.is_set():
                return

    def _clean_logged(self) -> None:
        try:
            self.clean()  # logs how many it deleted
        except PersistenceError as exc:  # the database is away: the next run retries
            self.log.warning("plan cleaner: database unavailable", error=str(exc))
        except Exception:
            self.log.exception("plan cleaner: run failed")
        finally:
            self.runs += 1
