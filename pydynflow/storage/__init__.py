"""Persistence: execution plans in SQLite or PostgreSQL through peewee.

* `Storage` saves, loads, finds and deletes execution plans (`pydynflow.storage.store`, a
  facade over one module per noun: plans, rows, envelopes, records, chunks).
* Writers run the persistence actor's transactions, in a process of their own or on its
  thread (`pydynflow.storage.writer`).
* `encode` / `decode` are the one codec for every stored payload: JSON, zstd-compressed above
  256 bytes, framed with a magic byte, a version and a CRC32 (`pydynflow.storage.codec`);
  a damaged or foreign blob raises `pydynflow.errors.CorruptData`. Nothing is ever pickled.
* `open_database` turns ``sqlite:///file.db``, ``sqlite:///:memory:`` or ``postgresql://...``
  into a configured peewee database (`pydynflow.storage.database`).
* `migrate` brings a database to the latest numbered schema migration
  (`pydynflow.storage.migrations`); the tables are described in `pydynflow.storage.models`.
"""

from pydynflow.storage.codec import decode, encode
from pydynflow.storage.database import open_database
from pydynflow.storage.migrations import migrate
from pydynflow.storage.store import Storage

__all__ = ["Storage", "decode", "encode", "migrate", "open_database"]
