"""`ThreadWorkers`: a fixed-size pool of threads for one queue.

Leaner than `concurrent.futures.ThreadPoolExecutor` on the hot path: a job is a tuple on a
`queue.SimpleQueue` and its result goes straight to a callback (no `Future`, no condition
variable per job). Threads start lazily, up to ``size``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from pydynflow.promise import wake_later

_STOP = None


class ThreadWorkers:
    """Run jobs on at most ``size`` threads named ``<name>-<n>``."""

    def __init__(self, size: int, name: str = "pydynflow-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one thread, got size={size}")
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[Any, Any], None]
    ) -> None:
        """Queue ``fn(*args)``; ``on_done(result, None)`` or ``on_done(None, error)`` follows."""
        if self._closed:
            raise RuntimeError(f"worker pool {self.name!r} is shut down")
        job = (fn, args, on_done)
        if not wake_later(self._enqueue, job):  # see `pydynflow.promise.waking_later`
            self._enqueue(job)

    def _enqueue(self, job: tuple[Any, ...]) -> None:
        self._jobs.put(job)
        # An idle thread may be about to take an earlier job: count queued jobs against the
        # idle threads, not just whether one is idle.
        if len(self._threads) < self.size and self._jobs.qsize() > self._idle:
            self._spawn()

    def shutdown(self, wait: bool = False) -> None:
        """Take no more jobs; workers exit once the queued jobs are done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()

    @property
    def threads(self) -> int:
        """Return how many worker threads are alive."""
        return sum(thread.is_alive() for thread in self._threads)

    def _spawn(self) -> None:
        with self._lock:
            if self._closed or len(self._threads) >= self.size:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            try:
                job = jobs.get_nowait()  # busy: the next job without counting in and out
            except queue.Empty:
                with lock:
                    self._idle += 1
                job = jobs.get()
                with lock:
                    self._idle -= 1
            if job is _STOP:
                return
            fn, args, on_done = job
            try:
                result = fn(*args)
            except BaseException as exc:  # reported, never lost with the thread
                on_done(None, exc)
            else:
                on_done(result, None)
