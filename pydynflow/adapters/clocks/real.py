"""`RealClock`: one daemon thread that fires every timer of a process (not a pykka actor).

It implements `pydynflow.clock.Clock` on monotonic time. A timer service has to sleep until
its next due time, and a pooled actor must never block a dispatcher thread, so the clock is
a singleton with a thread of its own. Actors do not send it messages: they call `schedule`,
which only pushes onto a heap under a lock, and a timer's callback ``tell``s the actor that
armed it.

Callbacks run one at a time on the clock's thread: they must be quick and must not block,
or every timer behind them waits.

The heap, lazy start and cancellation, and `close`: ``docs/internals/clock.md``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from pydynflow.clock import ClockClosedError, Timer, check_callback, normalize_delay

__all__ = ["RealClock"]

log = logging.getLogger("pydynflow.clock")

# Rebuild the heap when it holds more cancelled entries than this and than live ones.
_COMPACT_MIN_CANCELLED = 1024
# How long close() waits for a callback in progress before it gives up on the thread.
_CLOSE_JOIN_TIMEOUT = 5.0


class RealClock:
    """A `pydynflow.clock.Clock` on monotonic time, served by one lazily started thread."""

    def __init__(self, *, name: str = "pydynflow-clock") -> None:
        """Make a clock; no thread starts until the first `schedule`.

        Args:
            name: the name of the clock's thread.
        """
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._cancelled_in_heap = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def now(self) -> float:
        """`time.monotonic`, in seconds."""
        return time.monotonic()

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` on the clock thread once, ``delay`` seconds from now.

        A zero or negative delay fires as soon as possible. The callback must be quick and
        must not block.

        Raises:
            TypeError: ``callback`` is not callable, or ``delay`` is not a number.
            ValueError: ``delay`` is NaN or infinite.
            ClockClosedError: the clock has been closed.
        """
        check_callback(callback)
        seconds = normalize_delay(delay)
        with self._lock:
            if self._closed:
                raise ClockClosedError("the clock is closed")
            timer = Timer(
                time.monotonic() + seconds,
                callback,
                lock=self._lock,
                on_cancel=self._cancelled_locked,
            )
            entry = (timer.due, next(self._sequence), timer)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._wakeup.notify()
        return timer

    def close(self) -> None:
        """Cancel every pending timer and stop the clock thread. Idempotent.

        Waits for the thread to exit, unless called from a callback on that thread. If a
        callback is still running after a few seconds, logs a warning and returns.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                for _, _, timer in self._heap:
                    timer._drop_locked()
                self._heap.clear()
                self._cancelled_in_heap = 0
                self._wakeup.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(_CLOSE_JOIN_TIMEOUT)
        if thread.is_alive():
            log.warning("clock thread %s still running a callback after close()", thread.name)

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    def __enter__(self) -> RealClock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._heap)} armed"
        return f"<RealClock {state}>"

    # -- internals --------------------------------------------------------------------

    def _cancelled_locked(self, timer: Timer) -> None:
        """`Timer.on_cancel` hook: count the dead entry; compact a mostly dead heap."""
        self._cancelled_in_heap += 1
        dead = self._cancelled_in_heap
        if dead > _COMPACT_MIN_CANCELLED and dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].pending]
            heapq.heapify(self._heap)
            self._cancelled_in_heap = 0

    def _next_callback(self) -> Callable[[], None] | None:
        """Wait for the next due timer, mark it fired and return its callback.

        Returns None once the clock is closed.
        """
        with self._lock:
            while not self._closed:
                heap = self._heap
                if not heap:
                    self._wakeup.wait()
                    continue
                due, _, timer = heap[0]
                if not timer.pending:
                    heapq.heappop(heap)
                    self._cancelled_in_heap -= 1
                    continue
                remaining = due - time.monotonic()
                if remaining > 0:
                    self._wakeup.wait(min(remaining, threading.TIMEOUT_MAX))
                    continue
                heapq.heappop(heap)
                callback = timer._claim_locked()
                if callback is not None:
                    return callback
        return None

    def _run(self) -> None:
        while True:
            callback = self._next_callback()
            if callback is None:
                return
            try:
                callback()
            except BaseException:
                log.exception("clock callback %r raised", callback)
