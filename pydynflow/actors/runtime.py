"""What every actor of one world shares: configuration and the addresses of its services.

It is read-only after the world starts: actors talk through messages, never through it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from pydynflow.actors.pooled import Dispatcher
from pydynflow.actors.slots import WorkerSlots
from pydynflow.adapters.executors import ThreadWorkers, WorkerPool


@dataclass
class Runtime:
    """The services of a started world, handed to its actors."""

    world_id: str
    storage: Any
    dispatcher: Dispatcher
    persistence: Any  # ActorRef of the PersistenceActor
    pools: dict[str, WorkerPool]
    auto_rescue: bool = True
    max_recoveries: int = 3  # recoveries of a plan before it is paused for a person
    world: Any = None
    clock: Any = None  # pydynflow.clock.Clock: timers for plan_event, timeouts, polling
    processes: bool = False  # user code runs in worker processes
    middleware: Any = None  # the world's WorldMiddleware (None: none)
    slots: dict[str, WorkerSlots] = field(default_factory=dict)  # a queue's workers, as slots
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _loop_thread: threading.Thread | None = field(default=None, repr=False)
    _loop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _callbacks: Any = field(default=None, repr=False)
    _in_world: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def world_for_workers(self) -> Any:
        """Return the world user code may reach (``None`` when it runs in processes)."""
        return None if self.processes else self.world

    def __post_init__(self) -> None:
        for queue, pool in self.pools.items():
            self.slots.setdefault(queue, WorkerSlots(pool.size))

    def slots_of(self, queue: str) -> WorkerSlots:
        """Return the worker slots of ``queue`` (unknown queues fall back to ``default``)."""
        return self.slots.get(queue) or self.slots["default"]

    def running_steps(self) -> list[tuple[str, int]]:
        """Return ``(plan id, step id)`` of the steps whose code holds a worker now."""
        held = [claim for slots in self.slots.values() for claim in slots.holders()]
        return sorted(claim for claim in held if claim[1])  # step 0: a finalize phase

    @property
    def callbacks(self) -> WorkerPool:
        """Return where suspend callbacks run: two threads of their own (a callback is not a
        step: it must not take a worker that a step was promised)."""
        with self._loop_lock:
            if self._callbacks is None:
                self._callbacks = ThreadWorkers(2, name="pydynflow-callbacks")
            return self._callbacks

    def in_world(self, queue: str) -> WorkerPool:
        """Return where a run step that needs the world runs when user code otherwise runs
        in worker processes (`pydynflow.action.runs_in_world`): threads of this process, as
        many as the queue has workers (the step holds one of its slots all the same)."""
        with self._loop_lock:
            pool = self._in_world.get(queue)
            if pool is None:
                size = self.slots_of(queue).size
                pool = self._in_world[queue] = ThreadWorkers(size, name=f"pydynflow-{queue}-world")
            return pool

    def close_callbacks(self) -> None:
        """Stop the callback threads and the in-world threads of a process executor, if any
        were started."""
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=False)
        for pool in self._in_world.values():
            pool.shutdown(wait=False)

    def pool(self, queue: str) -> WorkerPool:
        """Return the worker pool of ``queue`` (unknown queues fall back to ``default``)."""
        return self.pools.get(queue) or self.pools["default"]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the world's asyncio loop, starting its thread on first use."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name="pydynflow-asyncio", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close_loop(self) -> None:
        """Cancel what still runs on the asyncio loop (parked async runs) and stop it.

        A cancelled run is not lost: its step is stored ``suspended`` (or ``running``) and
        runs again from the top when its plan is executed next.
        """
        with self._loop_lock:
            if self._loop is not None:
                loop = self._loop

                def cancel_and_stop() -> None:
                    for task in asyncio.all_tasks(loop):
                        task.cancel()
                    loop.call_soon(loop.stop)  # after the cancellations are processed

                loop.call_soon_threadsafe(cancel_and_stop)
                if self._loop_thread is not None:
                    self._loop_thread.join(5)
                self._loop = None
