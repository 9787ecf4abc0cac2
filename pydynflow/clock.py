"""The clock interface: the current time and one-shot timers.

A `Clock` tells the time (`Clock.now`) and runs a callback once, some seconds from now
(`Clock.schedule`, which returns a `Timer` that can be cancelled): delayed events
(`plan_event(event, delay=...)`), step timeouts (`schedule_timeout`), polling intervals.
`pydynflow.adapters.clocks.real.RealClock` serves every timer from one thread on monotonic
seconds; `pydynflow.testing.clock.ManagedClock` keeps virtual seconds that a test moves.

Callbacks must be quick and must not block: ``tell`` an actor or set a future, nothing else.
One thread may run every callback, and one that waits for an actor's reply can deadlock the
engine. More: ``docs/internals/clock.md``.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = [
    "Clock",
    "ClockClosedError",
    "Timer",
    "check_callback",
    "normalize_delay",
    "wall_time",
]

_PENDING = 0
_FIRED = 1
_CANCELLED = 2
_STATE_NAMES = {_PENDING: "pending", _FIRED: "fired", _CANCELLED: "cancelled"}


class ClockClosedError(RuntimeError):
    """Raised by `Clock.schedule` once the clock has been closed."""


def check_callback(callback: object) -> None:
    """Raise `TypeError` unless ``callback`` is callable (scenario CLOCK-03)."""
    if not callable(callback):
        raise TypeError(f"a timer callback must be callable, got {type(callback).__name__}")


def normalize_delay(delay: object) -> float:
    """Return ``delay`` as a float number of seconds, with a negative delay raised to 0.0.

    Raises `TypeError` for a value that is not a real number (``bool`` included), and
    `ValueError` for NaN or an infinite delay.
    """
    if isinstance(delay, bool) or not isinstance(delay, numbers.Real):
        raise TypeError(f"a timer delay must be a number of seconds, got {type(delay).__name__}")
    seconds = float(delay)
    if not math.isfinite(seconds):
        raise ValueError(f"a timer delay must be finite, got {seconds!r}")
    return max(seconds, 0.0)


class Timer:
    """One armed callback: fires once at clock time `due` unless cancelled first.

    A timer is *pending* until its clock fires it (`fired`) or it is cancelled
    (`cancelled`). Both end states are final, and only one of them can happen. A clock
    that is closed cancels its pending timers.

    Clocks build timers. Code that arms a timer only reads `due`, `fired` and
    `cancelled` and calls `cancel`.
    """

    __slots__ = ("_callback", "_lock", "_on_cancel", "_state", "due")

    def __init__(
        self,
        due: float,
        callback: Callable[[], None],
        *,
        lock: threading.Lock | None = None,
        on_cancel: Callable[[Timer], None] | None = None,
    ) -> None:
        """Arm ``callback`` for clock time ``due``.

        Args:
            due: the clock time the timer fires at.
            callback: called with no arguments when the timer fires.
            lock: the lock that guards the timer's state. A clock passes its own lock
                here, so the timer costs no lock of its own. A new lock is made if omitted.
            on_cancel: called with the timer, with ``lock`` held, when `cancel` succeeds.
                It must not take ``lock`` again.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        check_callback(callback)
        self.due: float = due
        """The clock time the timer fires at (`Clock.now` units)."""
        self._callback = callback
        self._lock = lock if lock is not None else threading.Lock()
        self._on_cancel = on_cancel
        self._state = _PENDING

    @property
    def callback(self) -> Callable[[], None]:
        """The function the timer calls when it fires."""
        return self._callback

    @property
    def fired(self) -> bool:
        """True once the clock has called (or started to call) the callback."""
        return self._state == _FIRED

    @property
    def cancelled(self) -> bool:
        """True once `cancel` succeeded, or the clock was closed before the timer fired."""
        return self._state == _CANCELLED

    @property
    def pending(self) -> bool:
        """True while the timer has neither fired nor been cancelled."""
        return self._state == _PENDING

    def cancel(self) -> bool:
        """Stop the timer from firing. Safe from any thread, including a clock callback.

        Returns:
            True if the timer was pending and will now never fire. False if it had already
            fired (or started firing) or had already been cancelled.
        """
        with self._lock:
            if self._state != _PENDING:
                return False
            self._state = _CANCELLED
            if self._on_cancel is not None:
                self._on_cancel(self)
            return True

    # For clock implementations, called with the timer's lock held.

    def _claim_locked(self) -> Callable[[], None] | None:
        """Mark a pending timer fired and return its callback, or None if not pending."""
        if self._state != _PENDING:
            return None
        self._state = _FIRED
        return self._callback

    def _drop_locked(self) -> None:
        """Cancel a pending timer without calling ``on_cancel`` (the clock is closing)."""
        if self._state == _PENDING:
            self._state = _CANCELLED

    def __repr__(self) -> str:
        name = getattr(self._callback, "__qualname__", None) or repr(self._callback)
        return f"<Timer due={self.due:.6f} {_STATE_NAMES[self._state]} {name}>"


@runtime_checkable
class Clock(Protocol):
    """The time source and timer service of a world.

    Implementations must be safe to call from any thread, and must call callbacks
    without holding their own locks. A callback may therefore call `schedule`,
    `Timer.cancel` or `now`.
    """

    def now(self) -> float:
        """The current clock time in seconds (monotonic for `RealClock`, virtual for tests)."""
        ...

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` once, ``delay`` seconds from now.

        A zero or negative delay means as soon as possible. The returned timer's ``due``
        is ``now() + max(delay, 0)``. Callbacks must be quick and must not block: they
        should ``tell`` an actor or set a future, nothing else.

        Raises:
            TypeError: ``callback`` is not callable, or ``delay`` is not a number.
            ValueError: ``delay`` is NaN or infinite.
            ClockClosedError: the clock has been closed.
        """
        ...

    def close(self) -> None:
        """Stop the clock. Pending timers are cancelled, and later `schedule` calls raise
        `ClockClosedError`. Idempotent."""
        ...


def wall_time(clock: object) -> datetime:
    """Return the date and time (aware UTC) on ``clock``: what its ``utcnow()`` says if it
    has one (`pydynflow.testing.ManagedClock` moves it with its virtual seconds), else the
    system's. Delayed plans fall due by it."""
    utcnow = getattr(clock, "utcnow", None)
    if callable(utcnow):
        now: datetime = utcnow()
        return now
    return datetime.now(UTC)
