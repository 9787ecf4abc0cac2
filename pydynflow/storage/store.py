"""`Storage`: execution plans in SQLite or PostgreSQL, one facade over one part per noun.

Its parts: plans with their steps and actions (`pydynflow.storage.plans`, rebuilt by
`pydynflow.storage.assembly`), their snapshots and rows (`pydynflow.storage.rows`), events for
steps (`pydynflow.storage.envelopes`), coordinator records (`pydynflow.storage.records`),
output chunks (`pydynflow.storage.chunks`), delayed plans and their chains
(`pydynflow.storage.delayed`), the worlds sharing the database (`pydynflow.storage.worlds`)
and their requests (`pydynflow.storage.requests`), deleting plans in batches
(`pydynflow.storage.retention`), plan lists for consoles (`pydynflow.storage.listing`),
over what they share (`pydynflow.storage.sql`).
`Storage` combines them as mixins, so a call costs no delegation, and adds the lifecycle:
opening, migrating, closing, and `Storage.transaction`. Every payload goes through
`pydynflow.storage.codec`. The design: docs/internals/persistence.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import peewee

from pydynflow.errors import PersistenceError
from pydynflow.storage.chunks import Chunks
from pydynflow.storage.database import close_database, open_database, redact_url
from pydynflow.storage.delayed import Delayed
from pydynflow.storage.envelopes import Envelopes
from pydynflow.storage.listing import Listing
from pydynflow.storage.migrations import migrate as _migrate
from pydynflow.storage.plans import ORDERABLE_COLUMNS, Plans
from pydynflow.storage.records import Records
from pydynflow.storage.requests import Requests
from pydynflow.storage.retention import Retention
from pydynflow.storage.sql import DRIVER_ERRORS, wrap_errors
from pydynflow.storage.sub_plans import SubPlans
from pydynflow.storage.worlds import Worlds

__all__ = ["ORDERABLE_COLUMNS", "Storage"]


class Storage(
    Plans, Envelopes, Records, Chunks, Worlds, Requests, SubPlans, Delayed, Listing, Retention
):
    """Execution plans in a SQLite file, an in-memory SQLite database or PostgreSQL.

    Each public write (`save_plan`, `save_steps`, ...) is atomic on its own; inside
    `transaction` it nests as a savepoint, so a batch of writes commits once. A `Storage`
    may be shared by any number of threads, each with its own connection.

    >>> storage = Storage("sqlite:///pydynflow.db")   # doctest: +SKIP
    >>> storage.save_plan(plan); storage.load_plan(plan.id) == plan   # doctest: +SKIP
    True
    """

    def __init__(
        self, url_or_database: str | peewee.Database, *, migrate: bool = True, create: bool = True
    ) -> None:
        """Open the store.

        Args:
            url_or_database: a URL for `pydynflow.storage.open_database` (``sqlite:///x.db``,
                ``sqlite:///:memory:``, ``postgresql://...``), or an open peewee database. A
                database given by URL belongs to the storage and `close` closes it; a database
                object passed in is left for its owner to close.
            migrate: bring the schema to the latest version now (see `migrate`).
            create: create a SQLite file that does not exist (False: refuse it).

        Raises:
            ValueError: for a URL that `open_database` does not accept.
            PersistenceError: if the database cannot be reached or migrated, or does not
                exist and ``create`` is False.
        """
        if isinstance(url_or_database, peewee.Database):
            super().__init__(url_or_database, url=None, owned=False)
        else:
            database = open_database(url_or_database, create=create)
            super().__init__(database, url=url_or_database, owned=True)
        if migrate:
            try:
                self.migrate()
            except BaseException:
                if self._owned:
                    close_database(self._db)
                raise

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def database(self) -> peewee.Database:
        """Return the peewee database this storage uses."""
        return self._db

    @property
    def dialect(self) -> str:
        """Return ``"sqlite"`` or ``"postgresql"``."""
        return "sqlite" if self._sqlite else "postgresql" if self._postgres else "other"

    @wrap_errors("migrate")
    def migrate(self) -> int:
        """Apply missing schema migrations and return the schema version (see `migrations`)."""
        return _migrate(self._db, name=redact_url(self.url) if self.url else None)

    def close(self) -> None:
        """Close the storage; idempotent. Any later call raises `PersistenceError`.

        A database the storage opened from a URL is closed in every thread (call this once no
        thread uses the storage any more; an in-memory database is gone afterwards). A database
        object passed to the constructor is left open for its owner.
        """
        if self._closed:
            return
        self._closed = True
        if self._owned:
            close_database(self._db)

    @property
    def in_memory(self) -> bool:
        """Whether the database lives in this process's memory (no other process can open it)."""
        return bool(getattr(self._db, "memory", False))

    def __enter__(self) -> Storage:
        """Return the storage; `close` it when the ``with`` block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the storage."""
        self.close()

    def __repr__(self) -> str:
        return f"<Storage {self._describe()}>"

    @wrap_errors("ping")
    def ping(self) -> bool:
        """Return True if the database answers a trivial query.

        Raises:
            PersistenceError: with the driver's reason if it does not.
        """
        row = self._db.execute_sql("SELECT 1").fetchone()
        return bool(row and row[0] == 1)

    @contextmanager
    def transaction(self) -> Iterator[Storage]:
        """Return a context manager: one atomic block for every write made inside it.

        Blocks nest (inner ones are savepoints); the outermost commits, or rolls back if the
        block raises. The transaction belongs to the calling thread. On SQLite it begins with
        ``BEGIN IMMEDIATE``. Driver errors surface as `PersistenceError`, naming the failure
        that ended the transaction (not a rollback that could not follow it); a connection
        it broke is dropped, and the next transaction opens a new one.
        """
        if self._closed:
            raise PersistenceError(f"transaction: the storage is closed ({self._describe()})")
        try:
            with self._write_atomic():
                yield self
        except DRIVER_ERRORS as exc:
            self._after_driver_error()
            raise PersistenceError(
                f"transaction failed ({self._describe()}): {type(exc).__name__}: {exc}"
            ) from exc
        except PersistenceError:  # a write inside failed: its connection may be gone too
            self._after_driver_error()
            raise

    @contextmanager
    def batched_transaction(self) -> Iterator[Storage]:
        """Return a context manager like `transaction`, whose statements are sent together.

        On PostgreSQL the rows written inside (`write_rows`, `put_record_data`) are held back
        and sent with ``BEGIN`` and ``COMMIT`` in one round trip, or with the first write
        whose answer is needed (`claim_plan`, the events' and records' writes, which open no
        savepoint here); the commit is as durable as `transaction`'s. Read inside only
        through the storage's methods that open a read transaction. On SQLite, and nested in
        another transaction, it is `transaction`.
        """
        if self._closed:
            raise PersistenceError(f"transaction: the storage is closed ({self._describe()})")
        try:
            with self._batched():
                yield self
        except DRIVER_ERRORS as exc:
            self._after_driver_error()
            raise PersistenceError(
                f"transaction failed ({self._describe()}): {type(exc).__name__}: {exc}"
            ) from exc
        except PersistenceError:
            self._after_driver_error()
            raise
