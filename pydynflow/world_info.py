"""`WorldInfo`: what `World.worlds` says of one world sharing the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorldInfo:
    """One world's record: who it is, what it serves, and whether it is alive.

    Attributes:
        id: the world's id (`World.id`).
        name: its name (`World.name`).
        executor: whether it executes plans (False: a client world).
        queues: the queues it serves and their pool sizes (empty for a client world).
        pid: its process id on ``hostname``.
        hostname: the host it runs on.
        started_at: when it registered (aware UTC, the database's clock).
        last_seen: its last heartbeat (aware UTC, the database's clock).
        alive: whether that heartbeat is younger than the ``validity_timeout`` the world
            registered with (each world says how long it may stay silent).
    """

    id: str
    name: str
    executor: bool
    queues: dict[str, int]
    pid: int
    hostname: str
    started_at: datetime
    last_seen: datetime
    alive: bool
