"""`DispatchThread`: the one thread through which a world talks to the others."""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from pydynflow.adapters.connectors import connector_for
from pydynflow.errors import PersistenceError
from pydynflow.storage.requests import executor_inbox, reply_inbox, world_inbox

if TYPE_CHECKING:
    from pydynflow.dispatch.client import RequestClient
    from pydynflow.dispatch.invalidation import Invalidator
    from pydynflow.dispatch.registry import WorldRegistry
    from pydynflow.dispatch.server import RequestServer

PLAN_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the plans a client world's callers wait for."""


class DispatchThread:
    """Heartbeat, invalidate dead worlds, apply requests, deliver replies; one thread.

    Each turn: wait for a wake-up (a ``NOTIFY``, the polling interval, or `interrupt`),
    then send what other threads queued (`send_later`), apply the requests in this world's
    inboxes (an executor world) and hand over the replies. Every ``heartbeat`` seconds it
    refreshes the world's record; an executor world also invalidates the worlds it finds
    dead. A world whose record was removed calls ``on_invalidated`` (an executor world
    then applies no more requests: they are other executors' now).
    """

    def __init__(
        self,
        registry: WorldRegistry,
        client: RequestClient,
        server: RequestServer | None,
        invalidator: Invalidator | None,
        *,
        heartbeat: float,
        on_invalidated: Any,
        log: Any,
    ) -> None:
        self.registry = registry
        self.client = client
        self.server = server
        self.invalidator = invalidator
        self.heartbeat = heartbeat
        self.on_invalidated = on_invalidated
        self.log = log
        world_id = registry.world_id
        self.inbox = world_inbox(world_id)
        served = [executor_inbox(queue) for queue in registry.queues] if server else []
        self.requests = [self.inbox, *served]
        self.replies = reply_inbox(world_id)
        self.connector = connector_for(registry.storage, [*self.requests, self.replies])
        self._outbox: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"pydynflow-dispatch-{world_id[:8]}", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (what it was applying is finished first)."""
        self._stopping.set()
        self.connector.interrupt()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def send_later(self, inbox: str, data: dict[str, Any]) -> None:
        """Store ``data`` in ``inbox`` from the dispatch thread (callable from any thread)."""
        self._outbox.put((inbox, data))
        self.connector.interrupt()

    def _run(self) -> None:
        storage = self.registry.storage
        next_beat = next_check = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    now = time.monotonic()
                    if now >= next_beat:
                        next_beat = now + self.heartbeat
                        self._beat()
                    if now >= next_check:
                        next_check = now + PLAN_CHECK_INTERVAL
                        self.client.check_plans(older_than=PLAN_CHECK_INTERVAL)
                    self._turn(storage)
                except PersistenceError as exc:  # the database is away: try again later
                    self.log.warning("dispatch: database unavailable", error=str(exc))
                    self._stopping.wait(min(self.heartbeat, 1.0))
                    continue
                self.connector.wait(max(0.0, min(next_beat, next_check) - time.monotonic()))
        finally:
            self.connector.close()

    def _turn(self, storage: Any) -> None:
        if not self._outbox.empty():
            outgoing = []
            while not self._outbox.empty():
                outgoing.append(self._outbox.get())
            storage.post_requests(outgoing)
        if self.server is not None:
            self._serve(storage, self.server)
        replies = storage.inbox([self.replies])
        if replies:
            for _, _, data in replies:
                self.client.resolve(data)
            storage.delete_envelopes([envelope_id for envelope_id, _, _ in replies])

    def _serve(self, storage: Any, server: RequestServer) -> None:
        found = storage.inbox(self.requests)
        if not found:
            return
        mine = [(envelope_id, data) for envelope_id, inbox, data in found if inbox == self.inbox]
        for inbox in {inbox for _, inbox, _ in found if inbox != self.inbox}:
            # What was read may be stale (another executor answered it, and on SQLite its
            # id may be another request's now): apply what this world took.
            ids = [envelope_id for envelope_id, where, _ in found if where == inbox]
            mine.extend(storage.take_requests(ids, inbox, self.inbox))
        answers = []
        try:
            for envelope_id, request in sorted(mine, key=lambda taken: taken[0]):
                if self._stopping.is_set():
                    break  # the rest stays stored, handed back when this world deregisters
                answers.append((envelope_id, request.get("sender"), server.apply(request)))
        finally:
            if answers:
                storage.answer_requests(answers)

    def _beat(self) -> None:
        if not self.registry.touch():
            # Invalidated: the requests an executor world would read are others' now.
            self.server = None
            self.on_invalidated()
            return
        if self.invalidator is not None:
            self.invalidator.sweep()
