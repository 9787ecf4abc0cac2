"""`WorldRegistry`: one world's record in ``dynflow_worlds``, and the records of the others."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from pydynflow.storage.requests import ANY_EXECUTOR, reply_inbox, world_inbox
from pydynflow.storage.singleton_lock import release_unstored_of
from pydynflow.storage.store import Storage
from pydynflow.world_info import WorldInfo

RECOVERY = "pydynflow.Recovery"
"""The coordinator records of plans being recovered, held by the world recovering each."""


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
            validity_timeout=self.validity_timeout,
        )

    def touch(self) -> bool:
        """Refresh this world's ``last_seen``; False if its record is gone (invalidated)."""
        return self.storage.touch_world(self.world_id)

    def deregister(self) -> None:
        """Delete this world's record, hand the requests it did not apply back to every
        executor, and drop its replies and its recovery records."""
        self._forget(self.world_id)
        self.storage.remove_world(self.world_id)

    def worlds(self) -> list[WorldInfo]:
        """Return every registered world, oldest first, with ``alive`` as of now: its last
        heartbeat is younger than the ``validity_timeout`` it registered with."""
        now = self.storage.database_now()
        found = []
        for record in self.storage.world_records():
            silence = timedelta(seconds=record.pop("validity_timeout"))
            found.append(WorldInfo(**record, alive=now - record["last_seen"] <= silence))
        return found

    def live_executors(self) -> list[WorldInfo]:
        """Return the executor worlds alive now."""
        return [info for info in self.worlds() if info.executor and info.alive]

    def invalidate(self, world_id: str, *, if_dead: bool = False) -> bool:
        """Remove a world's record and its inboxes; return whether this call removed it.

        ``if_dead``: only if its heartbeat is older than the ``validity_timeout`` it
        registered with (a world that just sent one stays).
        """
        if world_id == self.world_id:
            raise ValueError(f"world {world_id} cannot invalidate itself")
        before = None
        if if_dead:
            records = {r["id"]: r for r in self.storage.world_records()}
            if world_id not in records:
                return False
            silence = timedelta(seconds=records[world_id]["validity_timeout"])
            before = self.storage.database_now() - silence
        if not self.storage.remove_world(world_id, seen_before=before):
            return False
        self._forget(world_id)
        released = release_unstored_of(self.storage, world_id)
        if released:
            self.log.warning(
                "let go of the singleton locks a dead world's plannings held",
                dead_world_id=world_id,
                actions=released,
            )
        return True

    def _forget(self, world_id: str) -> None:
        storage = self.storage
        storage.move_inbox(world_inbox(world_id), ANY_EXECUTOR)
        storage.clear_inboxes([reply_inbox(world_id)])
        storage.delete_records_of(RECOVERY, world_id)

    def take_orphan(self, plan_id: str) -> bool:
        """Take the recovery of a plan whose world is gone; False if another live world
        took it (two executors finding one orphan: one recovers it)."""
        registered = {record["id"] for record in self.storage.world_records()}
        holder = self.storage.take_record(
            RECOVERY,
            plan_id,
            self.world_id,
            stale=lambda owner, _: owner not in registered,
        )
        return holder == self.world_id
