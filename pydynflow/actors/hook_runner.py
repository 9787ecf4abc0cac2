"""`HookRunner`: one thread per world that calls execution-plan hooks, in commit order.

Hooks are user code, and the plan must not wait for them: the persistence actor hands each
committed transition's hooks (`pydynflow.hooks.HookCalls`) here and goes on. One thread
calls them in the order they came, so the hooks of one plan run in the order of its
transitions; a slow hook delays only the hooks queued behind it, never a step. The thread
starts with the first hook and is a plain thread, not a dispatcher's: a hook may call the
world (trigger a plan, wait for one) as step code does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pydynflow.hooks import HookCalls, run_hook_calls


class HookRunner:
    """Call queued execution-plan hooks on a thread of their own (started on first use)."""

    def __init__(
        self,
        log: Any,
        name: str = "pydynflow-hooks",
        on_sub_plan_end: Callable[[HookCalls], None] | None = None,
    ) -> None:
        self.log = log
        self.on_sub_plan_end = on_sub_plan_end
        self.name = name
        self._queue: deque[HookCalls] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self._hurry = False

    def submit(self, calls: HookCalls) -> None:
        """Queue the hooks of one commit; never blocks (called where commits are acknowledged)."""
        with self._cond:
            if self._closed:
                self._dropped([calls], "the world has stopped")
                return
            self._queue.append(calls)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, timeout: float | None = None) -> int:
        """Take no more hooks; wait up to ``timeout`` seconds (None: as long as it takes)
        for the queued ones to run, drop those still queued then, and return how many."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if threading.current_thread() is self._thread:
                return 0  # a hook stops the world: the queued hooks run once it returns
            while (self._queue or self._busy) and not self._hurry:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            dropped = list(self._queue)
            self._queue.clear()
        if dropped:
            self._dropped(dropped, "the world stopped before they ran")
        return len(dropped)

    def hurry(self) -> None:
        """Make a `stop` in progress (or the next one) drop the queued hooks at once."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end after `stop`; return whether it has (or never ran)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _work(self) -> None:
        cond, queue = self._cond, self._queue
        while True:
            with cond:
                while not queue and not self._closed:
                    cond.wait()
                if not queue:
                    return  # stopped, nothing left
                calls = queue.popleft()
                self._busy = True
            try:
                run_hook_calls(calls, self.log)
                if calls.caller is not None and self.on_sub_plan_end is not None:
                    self.on_sub_plan_end(calls)
            except BaseException:  # the thread must outlive what a hook raises
                self.log.exception("execution-plan hooks failed", plan_id=calls.plan.id)
            finally:
                with cond:
                    self._busy = False
                    cond.notify_all()

    def _dropped(self, dropped: list[HookCalls], why: str) -> None:
        self.log.warning(
            f"execution-plan hooks dropped: {why}",
            plan_ids=sorted({calls.plan.id for calls in dropped}),
            calls=len(dropped),
        )
