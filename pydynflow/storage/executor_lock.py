"""`ExecutorLock`: one executor world per database at a time.

A world that executes plans recovers, when it starts, every plan stored ``running``: it
takes them for plans a dead world left. That holds only if no live executor world shares the
database, so an executor world holds this lock while it runs and a second one refuses to
start, naming the holder. The operating system (SQLite: an ``flock`` on a file beside the
database) or the server (PostgreSQL: an advisory lock held by a connection of its own)
releases it when the holding process dies, so a crashed world never blocks its successor.
Client worlds (``executor=False``) never take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydynflow.errors import DynflowError, PersistenceError
from pydynflow.storage.database import redact_url

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

try:  # PostgreSQL support is optional (the "postgres" extra)
    import psycopg2
except ImportError:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None

RECORD_CLASS = "pydynflow.ExecutorLock"  # PostgreSQL: who holds the lock (coordinator record)
_ADVISORY_CLASS = 0x7079_6466  # "pydf": the first key of the advisory lock
_ADVISORY_LOCK = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"


class ExecutorLockHeld(DynflowError):
    """Another executor world runs on this database."""


class ExecutorLock:
    """The executor lock of one database, held by one world until `release`."""

    def __init__(self, release: Any) -> None:
        self._release = release

    @classmethod
    def acquire(cls, storage: Storage, holder: dict[str, Any]) -> ExecutorLock:
        """Take the lock of ``storage``'s database for the world ``holder`` describes.

        Raises:
            ExecutorLockHeld: another executor world holds it (the message names it).
            PersistenceError: the lock could not be taken (no file, no server).
        """
        holder = {**holder, "since": datetime.now(UTC).isoformat(timespec="seconds")}
        if storage.in_memory:
            return cls(lambda: None)  # no other process can open the database
        if storage.dialect == "sqlite":
            return cls._acquire_file(storage.database.database, holder, storage)
        if storage.dialect == "postgresql":
            return cls._acquire_advisory(storage, holder)
        return cls(lambda: None)

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    @classmethod
    def _acquire_file(cls, path: str, holder: dict[str, Any], storage: Storage) -> ExecutorLock:
        lock_path = f"{path}-executor.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PersistenceError(f"cannot open the executor lock {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd, "rb") as lock_file:
                found = _parse(lock_file.read())
            raise ExecutorLockHeld(_held_message(storage, found)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)

        def release() -> None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor lets the flock go

        return cls(release)

    @classmethod
    def _acquire_advisory(cls, storage: Storage, holder: dict[str, Any]) -> ExecutorLock:
        try:
            connection = psycopg2.connect(storage.url)
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(_ADVISORY_LOCK, (_ADVISORY_CLASS,))
                taken = bool(cursor.fetchone()[0])
        except psycopg2.Error as exc:
            raise PersistenceError(
                f"cannot take the executor lock of {redact_url(str(storage.url))}: {exc}"
            ) from exc
        if not taken:
            connection.close()
            found = _parse(storage.record(RECORD_CLASS, "executor"))
            raise ExecutorLockHeld(_held_message(storage, found))
        storage.put_record(
            RECORD_CLASS, "executor", json.dumps(holder).encode(), owner_id=holder.get("world_id")
        )

        def release() -> None:
            with contextlib.suppress(Exception):
                storage.delete_record(RECORD_CLASS, "executor")
            with contextlib.suppress(Exception):
                connection.close()  # the server lets the advisory lock go with the connection

        return cls(release)


def _parse(data: bytes | None) -> dict[str, Any]:
    try:
        found = json.loads(data or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _held_message(storage: Storage, found: dict[str, Any]) -> str:
    who = "another executor world"
    if found:
        who = (
            f"executor world {found.get('name')!s} (id {found.get('world_id')!s}, "
            f"pid {found.get('pid')!s} on {found.get('host')!s}, since {found.get('since')!s})"
        )
    url = redact_url(storage.url) if storage.url else repr(storage)
    return (
        f"{who} already executes plans on {url}: a database has one executor world at a "
        "time. To plan, read or operate on its plans from another process, open a client "
        "world: World(db, executor=False)"
    )
