"""`ManagedClock`: virtual time for tests, e.g. ``World(clock=ManagedClock())``.

Time starts at 0.0 and moves only when the test calls `ManagedClock.advance`,
`ManagedClock.advance_to_next` or `ManagedClock.advance_all`. Timers fire in the calling
thread, in due order (timers due at the same time fire in the order they were armed).
While a timer fires, `ManagedClock.now` returns its due time. So a callback that arms
the next timer, as a polling action does, arms it relative to the moment it was
meant to fire, and the gaps between due times are exact.

The clock starts no thread. It is safe to use from several threads: a lock guards
its state, and callbacks run without that lock held, so they may call `schedule`,
`Timer.cancel`, `pending` or `now`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydynflow.clock import ClockClosedError, Timer, check_callback, normalize_delay

__all__ = ["ManagedClock"]


class ManagedClock:
    """A `pydynflow.clock.Clock` whose time is moved by the test, with no threads."""

    def __init__(self, start: float = 0.0, *, wall: datetime | None = None) -> None:
        """Make a clock that reads ``start`` (virtual seconds) until advanced.

        ``wall``: the date and time (aware) `utcnow` reads at ``start``; default: now.
        """
        self._lock = threading.Lock()
        self._now = float(start)
        self._start = float(start)
        self._wall = (wall or datetime.now(UTC)).astimezone(UTC)
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._closed = False

    def now(self) -> float:
        """The virtual time in seconds."""
        return self._now

    def utcnow(self) -> datetime:
        """The virtual date and time (aware UTC): ``wall`` moved by the virtual seconds
        elapsed since ``start`` (delayed plans fall due by it)."""
        return self._wall + timedelta(seconds=self._now - self._start)

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Arm ``callback()`` for virtual time ``now() + max(delay, 0)``.

        Nothing fires here, not even with a zero delay. The timer fires during the next
        ``advance*`` call that reaches its due time (``advance(0)`` for a zero delay).

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
            timer = Timer(self._now + seconds, callback, lock=self._lock)
            heapq.heappush(self._heap, (timer.due, next(self._sequence), timer))
        return timer

    def close(self) -> None:
        """Cancel every pending timer; later `schedule` calls raise. Idempotent."""
        with self._lock:
            self._closed = True
            for _, _, timer in self._heap:
                timer._drop_locked()
            self._heap.clear()

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    def pending(self) -> list[Timer]:
        """The armed timers (neither fired nor cancelled), in firing order."""
        with self._lock:
            entries = sorted(entry for entry in self._heap if entry[2].pending)
        return [timer for _, _, timer in entries]

    def advance(self, seconds: float) -> int:
        """Move virtual time forward by ``seconds`` and fire every timer due by then.

        Timers fire in the calling thread, in due order. `now` reads each timer's due
        time while it fires, then the end of the window. Timers armed by callbacks
        during the advance also fire if they fall due within the window. If a callback
        raises, the exception propagates. `now` then reads that timer's due time, and
        the timers not yet fired stay pending.

        Returns:
            The number of timers fired.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative, NaN or infinite.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and not negative, got {seconds!r}")
        end = self._now + float(seconds)
        fired = 0
        while True:
            callback = self._claim_next(until=end)
            if callback is None:
                break
            fired += 1
            callback()
        with self._lock:
            self._now = max(self._now, end)
        return fired

    def advance_to_next(self) -> bool:
        """Fire the earliest pending timer, moving time to its due time.

        Returns:
            True if a timer fired, False if none was pending (time does not move).
        """
        callback = self._claim_next(until=None)
        if callback is None:
            return False
        callback()
        return True

    def advance_all(self, max_steps: int = 10_000) -> int:
        """Fire timers one by one (`advance_to_next`) until none is pending.

        Returns:
            The number of timers fired.

        Raises:
            RuntimeError: timers are still pending after ``max_steps`` have fired, e.g. a
                callback that keeps re-arming itself.
        """
        for step in range(max_steps):
            if not self.advance_to_next():
                return step
        if self.pending():
            raise RuntimeError(
                f"timers still pending after {max_steps} steps (a timer that keeps re-arming?)"
            )
        return max_steps

    def __enter__(self) -> ManagedClock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ManagedClock now={self._now} {len(self.pending())} pending>"

    # -- internals --------------------------------------------------------------------

    def _claim_next(self, until: float | None) -> Callable[[], None] | None:
        """Take the earliest pending timer due by ``until`` (any if None), mark it fired,
        move time to its due time and return its callback; None if there is none."""
        with self._lock:
            heap = self._heap
            while heap:
                due, _, timer = heap[0]
                if not timer.pending:
                    heapq.heappop(heap)
                    continue
                if until is not None and due > until:
                    return None
                heapq.heappop(heap)
                callback = timer._claim_locked()
                if callback is not None:
                    self._now = max(self._now, due)
                    return callback
        return None
