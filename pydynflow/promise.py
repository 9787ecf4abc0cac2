"""`Promise`: a light, thread-safe future for answers one thread gives another.

`concurrent.futures.Future` builds a `threading.Condition` per future, which every waiting
plan would carry for nothing. A promise makes one lock only once a thread waits for it (many
promises are only ever answered, or read after their answer): taken when made, released when
the answer is set, which is all a waiter needs. It offers the part of the
`concurrent.futures.Future` interface pydynflow uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_UNSET: Any = object()


class Promise(Generic[T]):
    """An answer that will be set once: ``set_result`` / ``set_exception``, then ``result``."""

    __slots__ = ("_callbacks", "_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock: threading.Lock | None = None  # made by the first waiter; released by the answer
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Promise[T]], Any]] | None = None

    def done(self) -> bool:
        """Return whether the answer is set."""
        return self._value is not _UNSET or self._error is not None

    def set_result(self, value: T) -> None:
        """Set the answer to ``value`` (once)."""
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        """Set the answer to the error ``error`` (once)."""
        self._settle(_UNSET, error)

    def result(self, timeout: float | None = None) -> T:
        """Return the answer (raise its error); raise `TimeoutError` after ``timeout``."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the error the answer is, or None; raise `TimeoutError` after ``timeout``."""
        self._wait(timeout)
        return self._error

    def add_done_callback(self, fn: Callable[[Promise[T]], Any]) -> None:
        """Call ``fn(self)`` once the answer is set (now, if it is already)."""
        with _callbacks_lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _wait(self, timeout: float | None) -> None:
        if self.done():
            return
        with _callbacks_lock:
            if self.done():
                return
            lock = self._lock
            if lock is None:
                lock = self._lock = threading.Lock()
                lock.acquire()  # released once the answer is in
        if not lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise TimeoutError(f"no answer within {timeout} s")
        lock.release()  # let the next waiter through

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with _callbacks_lock:
            if self.done():
                raise RuntimeError("a promise is answered only once")
            self._value, self._error = value, error
            callbacks, self._callbacks = self._callbacks, None
            lock = self._lock  # a waiter's: made under this lock, so seen here if there
        if lock is not None and not wake_later(_RELEASE, lock):
            lock.release()
        for fn in callbacks or ():
            fn(self)


_callbacks_lock = threading.Lock()  # brief: callback registration, settling, a first wait


_RELEASE = type(threading.Lock()).release


class _Deferred(threading.local):
    """Per thread: the wake-ups held back by `waking_later` (None outside it)."""

    wakes: list[tuple[Callable[[Any], Any], Any]] | None = None


_deferred = _Deferred()


def wake_later(wake: Callable[[Any], Any], arg: Any) -> bool:
    """Hold back ``wake(arg)`` to the end of this thread's `waking_later` block, if it is in
    one; return whether it was held back (else the caller wakes at once)."""
    wakes = _deferred.wakes
    if wakes is None:
        return False
    wakes.append((wake, arg))
    return True


@contextmanager
def waking_later() -> Iterator[None]:
    """Within the block, what this thread would wake (the waiters of the promises it settles,
    the worker threads of the jobs it queues) wakes only at its end.

    For a thread that hands out many answers in a row while it keeps the interpreter busy
    (the writer's reply thread acknowledging a batch): a thread woken at once would only
    wait again, for the GIL. Answers are visible at once all the same (``done()``, and
    ``result()`` of a thread that was not already waiting); only the wake-up is later.
    """
    if _deferred.wakes is not None:  # nested: the outer block wakes them
        yield
        return
    _deferred.wakes = []
    try:
        yield
    finally:
        wakes, _deferred.wakes = _deferred.wakes, None
        for wake, arg in wakes:
            wake(arg)
