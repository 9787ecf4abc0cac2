"""Connectors: how a world learns that a request or a reply arrived in its inboxes.

`base.Connector` is the interface; `polling.PollingConnector` (SQLite: processes of one host
sharing a file) wakes its world at a short interval; `postgres.ListeningConnector` wakes it
on ``NOTIFY`` through a connection of its own. `connector_for` picks one for a storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydynflow.adapters.connectors.base import POLL_INTERVAL, Connector
from pydynflow.adapters.connectors.polling import PollingConnector
from pydynflow.adapters.connectors.postgres import ListeningConnector

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = ["Connector", "ListeningConnector", "PollingConnector", "connector_for"]


def connector_for(storage: Storage, inboxes: Iterable[str]) -> Connector:
    """Return the connector for ``storage``: listening on PostgreSQL, polling otherwise."""
    if storage.dialect == "postgresql":
        return ListeningConnector(storage, inboxes)
    return PollingConnector(POLL_INTERVAL)
