"""`ListeningConnector`: ``LISTEN`` on a world's inbox channels, on a connection of its own."""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydynflow.adapters.connectors.base import Connector
from pydynflow.storage.requests import channel

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

try:  # PostgreSQL support is optional (the "postgres" extra)
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - exercised only without psycopg2
    psycopg2 = None


class ListeningConnector(Connector):
    """Wake when a ``NOTIFY`` arrives on one of the inboxes' channels.

    The connection is opened lazily by the dispatch thread and opened again after it breaks
    (the server restarting): the thread then also looks at its inboxes, so that a
    notification sent while no connection listened is not waited for.
    """

    def __init__(self, storage: Storage, inboxes: Iterable[str]) -> None:
        database = storage.database
        self._connect_args: dict[str, Any] = {
            "dbname": database.database,
            **database.connect_params,
        }
        self._channels = [channel(inbox) for inbox in inboxes]
        self._connection: Any = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def _listen(self) -> Any:
        connection = psycopg2.connect(**self._connect_args)
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            for name in self._channels:
                cursor.execute(f'LISTEN "{name}"')
        return connection

    def wait(self, timeout: float) -> bool:
        """Wait for a notification up to ``timeout`` seconds; True if one came (or the
        connection was just opened again)."""
        if self._connection is None:
            try:
                self._connection = self._listen()
            except psycopg2.Error:  # the server is away: try again after a while
                self._sleep(min(timeout, 1.0))
                return False
            return True  # what was sent before we listened is in the inbox already
        connection = self._connection
        try:
            if not connection.notifies:
                ready, _, _ = select.select([connection, self._wake_read], [], [], timeout)
                if self._wake_read in ready:
                    os.read(self._wake_read, 4096)
                    return True
                if not ready:
                    return False
            connection.poll()
        except (psycopg2.Error, OSError, ValueError):
            self._drop()
            return True
        woken = bool(connection.notifies)
        connection.notifies.clear()
        return woken

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_read], [], [], seconds)
        if ready:
            os.read(self._wake_read, 4096)

    def interrupt(self) -> None:
        """End a pending `wait` at once (a pipe write: safe from any thread)."""
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self._wake_write, b"!")

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg2.Error):
                connection.close()

    def close(self) -> None:
        """Close the listening connection and the wake-up pipe."""
        self._drop()
        os.close(self._wake_read)
        os.close(self._wake_write)
