"""`WorldRegistry`: one world's record in ``dynflow_worlds``, and the records of the others."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from pydynflow.storage.requests import reply_inbox, world_inbox
from pydynflow.storage.store import Storage
from pydynflow.world_info import WorldInfo


class WorldRegistry:
    """Register a world, keep its heartbeat, list and invalidate worlds.

    Args:
        storage: the shared database.
        world_id: this world's id.
        name: this world's name.
        executor: whether this world executes plans.
        queues: the queues it serves (ignored for a client world).
        validity_timeout: seconds without a heartbeat after which a world is dead.
        log: the world's logger.
    """

    def __init__(
        self,
        storage: Storage,
        world_id: str,
        *,
        name: str,
        executor: bool,
        queues: dict[str, int],
        validity_timeout: float,
        log: Any,
    ) -> None:
        self.storage = storage
        self.world_id = world_id
        self.name = name
        self.executor = executor
        self.queues = dict(queues) if executor else {}
        self.validity_timeout = validity_timeout
        self.log = log

    def register(self) -> None:
        """Record this world as started and seen now."""
        self.storage.register_world(
            self.world_id,
            name=self.name,
            executor=self.executor,
            queues=self.queues,
            pid=os.getpid(),
            hostname=socket.gethostname(),
        )

    def touch(self) -> bool:
        """Refresh this world's ``last_seen``; False if its record is gone (invalidated)."""
        return self.storage.touch_world(self.world_id)

    def deregister(self) -> None:
        """Delete this world's record and whatever its inboxes still hold."""
        self.storage.remove_world(self.world_id)
        self.storage.clear_inboxes([world_inbox(self.world_id), reply_inbox(self.world_id)])

    def worlds(self) -> list[WorldInfo]:
        """Return every registered world, oldest first, with ``alive`` as of now."""
        now = self.storage.database_now()
        limit = timedelta(seconds=self.validity_timeout)
        return [
            WorldInfo(**record, alive=now - record["last_seen"] <= limit)
            for record in self.storage.world_records()
        ]

    def live_executors(self) -> list[WorldInfo]:
        """Return the executor worlds alive now."""
        return [info for info in self.worlds() if info.executor and info.alive]

    def invalidate(self, world_id: str, *, if_dead: bool = False) -> bool:
        """Remove a world's record and its inboxes; return whether this call removed it.

        ``if_dead``: only if its heartbeat is older than ``validity_timeout`` (of two worlds
        that find it dead at once, one invalidates it).
        """
        if world_id == self.world_id:
            raise ValueError(f"world {world_id} cannot invalidate itself")
        before = None
        if if_dead:
            before = self.storage.database_now() - timedelta(seconds=self.validity_timeout)
        if not self.storage.remove_world(world_id, seen_before=before):
            return False
        self.storage.clear_inboxes([world_inbox(world_id), reply_inbox(world_id)])
        return True
