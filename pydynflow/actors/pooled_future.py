"""`PooledFuture`: the reply of a pooled actor's ``ask``, awaitable from threads and asyncio,
and the per-thread state it shares with the dispatcher's workers: blocking on a future is
refused on a dispatcher thread, where it could deadlock the pool (`pydynflow.actors.pooled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from pykka import Timeout

if TYPE_CHECKING:
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

    from pydynflow.actors.pooled import Dispatcher

__all__ = ["DEADLOCK_MESSAGE", "PooledFuture", "on_dispatcher_thread"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEADLOCK_MESSAGE = (
    "blocking ask from a dispatcher thread would deadlock the pool; use tell and reply by message"
)


# Set on every dispatcher worker thread: `PooledFuture.get` refuses to block there.
class _WorkerState(threading.local):
    """Per thread: the dispatcher whose worker this thread is (None on any other thread).

    A class default, so that reading it on other threads (workers, callers of
    `tell_and_run`) finds None without raising and catching an AttributeError each time.
    """

    dispatcher: Dispatcher | None = None  # set by `Dispatcher`'s workers


_worker_state = _WorkerState()
# Guards callback registration on futures (rare: only `add_done_callback`).
_callbacks_lock = threading.Lock()


def on_dispatcher_thread() -> bool:
    """Return whether this thread is one of a dispatcher's (where nothing may block)."""
    return _worker_state.dispatcher is not None


class PooledFuture(pykka.Future[T]):
    """Hold a reply that can be awaited from plain threads or from asyncio.

    The future is one plain lock, held from creation until `set` or
    `set_exception` releases it. A thread that calls `get` blocks on that lock.
    There is no `threading.Condition` to build, and nothing to notify if
    nobody waits.

    `get` raises `RuntimeError` on a dispatcher thread (unless `timeout=0`),
    because blocking there can deadlock the pool. A future is set once, by the
    actor that handles the message.
    """

    __slots__ = ("_callbacks", "_done", "_result")

    def __init__(self) -> None:
        super().__init__()
        self._done = threading.Lock()
        self._done.acquire()
        self._result: tuple[Any, OptExcInfo | None] | None = None
        self._callbacks: list[Callable[[PooledFuture[T]], None]] | None = None

    def get(self, *, timeout: float | None = None) -> T:
        """Return the value, or raise the exception, blocking until it is set.

        Args:
            timeout: Seconds to wait. `None` waits forever, and `0` only polls.

        Raises:
            pykka.Timeout: If the value is not set in time.
            RuntimeError: If this would block on a dispatcher thread.
        """
        if timeout != 0 and on_dispatcher_thread():
            raise RuntimeError(DEADLOCK_MESSAGE)
        result = self._result
        if result is None:
            if self._get_hook is not None:
                return super().get(timeout=timeout)
            if not self._done.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                raise Timeout(f"{timeout} seconds")
            self._done.release()
            result = self._result
            assert result is not None
        value, exc_info = result
        if exc_info is not None:
            exc_type, exc_value, exc_traceback = exc_info
            assert exc_type is not None
            if exc_value is None:
                exc_value = exc_type()
            if exc_value.__traceback__ is not exc_traceback:
                raise exc_value.with_traceback(exc_traceback)
            raise exc_value
        return value  # type: ignore[no-any-return]

    def set(self, value: Any | None = None) -> None:
        """Set the value and wake every waiter.

        Raises:
            queue.Full: If the future already has a value or a get hook.
        """
        self._complete((value, None))

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        """Set an exception (default: the one being handled) and wake every waiter.

        Raises:
            queue.Full: If the future already has a value or a get hook.
        """
        assert exc_info is None or len(exc_info) == 3
        self._complete((None, sys.exc_info() if exc_info is None else exc_info))

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        """Compute the value with `func(timeout)` when `get` is called.

        Raises:
            queue.Full: If the future already has a value.
        """
        if self._result is not None:
            raise queue.Full
        super().set_get_hook(func)

    def done(self) -> bool:
        """Return whether a value or an exception has been set."""
        return self._result is not None

    def add_done_callback(self, fn: Callable[[PooledFuture[T]], None]) -> None:
        """Call `fn(self)` once the future is set, or now if it already is.

        `fn` runs on the thread that sets the future, often a dispatcher thread,
        so it must be quick and must not block. Futures built by `map`, `join`,
        `filter` or `reduce` are never set, so their callbacks never run.
        """
        with _callbacks_lock:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(fn)
        if self._result is not None:
            self._run_callbacks(self._callbacks)

    def as_asyncio(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[T]:
        """Return an asyncio future on `loop` that resolves like this one.

        The result is handed over with `loop.call_soon_threadsafe`, so the loop
        never blocks. Derived futures (`map`, `join`, ...) have no value to
        hand over, so they are computed on the loop's default executor instead.

        Args:
            loop: The loop to resolve on (default: the running loop).

        Raises:
            RuntimeError: If no loop is given and none is running.
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        if self._get_hook is not None:
            return loop.run_in_executor(None, self.get)
        target: asyncio.Future[T] = loop.create_future()

        def hand_over(source: PooledFuture[T]) -> None:
            with contextlib.suppress(RuntimeError):  # A closed loop has nobody waiting.
                loop.call_soon_threadsafe(_copy_result, source, target)

        self.add_done_callback(hand_over)
        return target

    def __await__(self) -> Generator[Any, None, T]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # Not under asyncio: keep pykka's blocking behaviour.
            return (yield from super().__await__())
        return (yield from self.as_asyncio(loop).__await__())

    def _complete(self, result: tuple[Any, OptExcInfo | None]) -> None:
        if self._result is not None or self._get_hook is not None:
            raise queue.Full
        self._result = result
        self._done.release()
        # Read after writing `_result`. `add_done_callback` does the reverse, so
        # at least one side sees the other. Popping makes each callback run once.
        if self._callbacks:
            self._run_callbacks(self._callbacks)

    def _run_callbacks(self, callbacks: list[Callable[[PooledFuture[T]], None]]) -> None:
        while True:
            try:
                fn = callbacks.pop(0)
            except IndexError:
                return
            try:
                fn(self)
            except Exception:
                logger.exception("callback %r of %r failed", fn, self)


def _copy_result(source: PooledFuture[Any], target: asyncio.Future[Any]) -> None:
    if target.done():  # Cancelled by the awaiting side.
        return
    assert source._result is not None
    value, exc_info = source._result
    if exc_info is None:
        target.set_result(value)
        return
    exc_type, exc_value, exc_traceback = exc_info
    assert exc_type is not None
    if exc_value is None:
        exc_value = exc_type()
    if exc_traceback is not None and exc_value.__traceback__ is not exc_traceback:
        exc_value = exc_value.with_traceback(exc_traceback)
    target.set_exception(exc_value)
