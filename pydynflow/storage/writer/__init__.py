"""Writers: where the persistence actor's transactions run, a writer process or its own thread.

The persistence actor stays the only writer of a world; a *writer* is the part of it that
holds the write connection and turns batches of change sets (`ChangeSet`) into
transactions, acknowledging each batch once it is committed. `writer_for` picks one:
`ProcessWriter` for SQLite files and PostgreSQL, `ThreadWriter` for a database no other
process can open. Both retry a transaction that fails for a passing reason until a fatal
timeout. The design: docs/internals/persistence.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydynflow.storage.writer.base import Done, OnFatal, Writer
from pydynflow.storage.writer.changes import ChangeSet, write_requests
from pydynflow.storage.writer.child import EXIT_AFTER_COMMITS, EXIT_AT_START, FAULT_FILE
from pydynflow.storage.writer.commit import FATAL_TIMEOUT
from pydynflow.storage.writer.ledger import LEDGER
from pydynflow.storage.writer.pacer import GROUP_REQUESTS_MAX, GROUP_REQUESTS_MIN
from pydynflow.storage.writer.process import (
    MAX_DELIVERIES,
    WRITER_CPUS,
    ProcessWriter,
    writer_cpus,
)
from pydynflow.storage.writer.thread import ThreadWriter

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = [
    "EXIT_AFTER_COMMITS",
    "EXIT_AT_START",
    "FATAL_TIMEOUT",
    "FAULT_FILE",
    "GROUP_REQUESTS_MAX",
    "GROUP_REQUESTS_MIN",
    "LEDGER",
    "MAX_DELIVERIES",
    "WRITER_CPUS",
    "ChangeSet",
    "Done",
    "OnFatal",
    "ProcessWriter",
    "ThreadWriter",
    "Writer",
    "write_requests",
    "writer_cpus",
    "writer_for",
]


def writer_for(
    storage: Storage,
    owner: str | None = None,
    *,
    fatal_timeout: float = FATAL_TIMEOUT,
    on_fatal: OnFatal | None = None,
) -> ThreadWriter | ProcessWriter:
    """Return the writer for ``storage``: a process for files and servers, else a thread.

    ``PYDYNFLOW_PERSISTENCE=thread`` asks for the thread whatever the database. ``owner``
    (a world id) owns the process writer's ledger record. ``fatal_timeout`` and
    ``on_fatal``: see `ProcessWriter`.
    """
    url = storage.url
    in_thread = os.environ.get("PYDYNFLOW_PERSISTENCE", "").lower() == "thread"
    if in_thread or url is None or storage.in_memory:
        return ThreadWriter(storage, fatal_timeout=fatal_timeout, on_fatal=on_fatal)
    return ProcessWriter(url, writer_cpus(), owner, fatal_timeout=fatal_timeout, on_fatal=on_fatal)
