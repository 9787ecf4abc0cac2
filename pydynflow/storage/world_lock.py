"""`WorldLock`: the lock an executor world's process holds while it lives.

The operating system (SQLite: an ``flock`` on ``<database>.worlds/<world id>.lock``) or the
server (PostgreSQL: a session advisory lock held by a connection of its own) releases it
when the process dies, however it dies. Any world can then tell at once that another world
is dead (`world_is_dead`), without waiting for its heartbeat to age: that is how a world
that starts after a crash recovers the crashed world's plans at once, and how several
executor worlds share one database safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import TYPE_CHECKING, Any

from pydynflow.errors import PersistenceError
from pydynflow.storage.database import redact_url

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

try:  # PostgreSQL support is optional (the "postgres" extra)
    import psycopg2
except ImportError:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None

_ADVISORY_CLASS = 0x7079_6477  # "pydw": the first key of every world's advisory lock
_KEY = "hashtext(current_schema() || ':' || %s)"


class WorldLock:
    """The liveness lock of one world, held until `release` (or the process's death)."""

    def __init__(self, release: Any) -> None:
        self._release = release

    @classmethod
    def acquire(cls, storage: Storage, world_id: str) -> WorldLock:
        """Take the lock of ``world_id`` (a fresh id: nobody else holds it).

        Raises:
            PersistenceError: the lock could not be taken (no directory, no server).
        """
        if storage.in_memory:
            return cls(lambda: None)  # no other process can open the database
        if storage.dialect == "sqlite":
            return cls._acquire_file(_lock_path(storage, world_id))
        if storage.dialect == "postgresql":
            return cls._acquire_advisory(storage, world_id)
        return cls(lambda: None)

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    @classmethod
    def _acquire_file(cls, path: str) -> WorldLock:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise PersistenceError(f"cannot take the world lock {path}: {exc}") from exc

        def release() -> None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)  # closing the descriptor lets the flock go

        return cls(release)

    @classmethod
    def _acquire_advisory(cls, storage: Storage, world_id: str) -> WorldLock:
        try:
            connection = psycopg2.connect(storage.url)
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT pg_try_advisory_lock(%s, {_KEY})", (_ADVISORY_CLASS, world_id)
                )
                taken = bool(cursor.fetchone()[0])
        except psycopg2.Error as exc:
            raise PersistenceError(
                f"cannot take the world lock on {redact_url(str(storage.url))}: {exc}"
            ) from exc
        if not taken:  # pragma: no cover - a fresh uuid's key is free but for a collision
            connection.close()
            raise PersistenceError(f"the world lock of {world_id} is held already")

        def release() -> None:
            with contextlib.suppress(Exception):
                connection.close()  # the server lets the advisory lock go with the connection

        return cls(release)


def world_is_dead(storage: Storage, world_id: str) -> bool:
    """Return True if no live process holds executor world ``world_id``'s lock (False:
    alive, or unknown).

    Ask only about executor worlds: they take their lock before they register and let it
    go after they deregister, so a registered executor world without one is dead. (Client
    worlds take none.)
    """
    if storage.in_memory:
        return False
    if storage.dialect == "sqlite":
        return _file_free(_lock_path(storage, world_id))
    if storage.dialect == "postgresql":
        return _advisory_free(storage, world_id)
    return False


def _lock_path(storage: Storage, world_id: str) -> str:
    return os.path.join(f"{storage.database.database}.worlds", f"{world_id}.lock")


def _file_free(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True  # let go of, while the world's record stayed: it died after that
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return True


def _advisory_free(storage: Storage, world_id: str) -> bool:
    cursor = storage.database.cursor()
    cursor.execute(f"SELECT pg_try_advisory_lock(%s, {_KEY})", (_ADVISORY_CLASS, world_id))
    if not cursor.fetchone()[0]:
        return False
    cursor.execute(f"SELECT pg_advisory_unlock(%s, {_KEY})", (_ADVISORY_CLASS, world_id))
    return True
