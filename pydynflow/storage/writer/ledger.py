"""`Ledger`: which batches the writer process has committed, kept in every transaction.

A writer process can die after a transaction commits and before its replies reach the
world, which then sends the unanswered batches again to the next process. Writing them twice
would not be harmless (a claim refused by its own first write, one more stored event
dropped), so each transaction also writes a coordinator record of what it committed, and
the next process answers those batches from it instead.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = ["LEDGER", "Answer", "Ledger", "split_refused"]

LEDGER = "pydynflow.WriterLedger"
"""The coordinator record class of a `Ledger`; the record's id is the writer's key."""
Answer = tuple[set[int], "str | None", bool]
"""A batch's answer in the writer process: (refused claims, error or None, whether fatal)."""


class Ledger:
    """Which batches are done, stored in every transaction, for the writer's successor.

    A child can die after a transaction commits and before its replies reach the world;
    the world then sends the unanswered batches again, to the next child. Writing them a
    second time would not be harmless: a claim would be refused by its own first write (the
    plan is already running) and an ``envelope_pop`` would drop one more stored event. So
    every transaction also writes a coordinator record (class `LEDGER`, id the writer's
    key): the batches done so far (every number up to a mark, and any above it: when a
    group's transaction fails and its batches are committed one by one, a failed one stays
    out) and the refused claims of the batches the current group committed. A new child
    reads it once: a batch it holds is answered from it, not written again; any other is
    written (a failed one fails again). Only the current group's batches can come back (a
    child writes a group's replies before it reads the next), so those are the only answers
    it keeps. A clean close deletes it.

    The same record settles an attempt whose outcome was lost with its connection (during
    its ``COMMIT``): if the record holds what that attempt wrote, it committed (`landed`).
    """

    def __init__(self, storage: Storage, key: str, owner: str | None = None) -> None:
        self.storage = storage
        self.key = key
        self.owner = owner  # the world's id: a dead world's record can be found by it
        self.commits = 0  # transactions recorded by this child
        self.written_at = 0.0  # when the last transaction was recorded, just before its commit
        self.up_to = 0  # every batch numbered up to this one is done
        self.above: set[int] = set()  # and these, numbered higher
        self.refused: dict[int, set[int]] = {}  # a predecessor's last group's answers
        self.group_done: set[int] = set()  # committed in the current group so far
        self.group_refused: dict[int, set[int]] = {}
        self._candidate: tuple[set[int], dict[int, set[int]]] = (set(), {})
        # What the last attempt not known to have committed wrote, and its refused claims.
        self._written: tuple[bytes, set[int]] | None = None
        data = storage.record(LEDGER, key)
        if data is not None:  # JSON written by `recorder`; never unpickled
            up_to, above, refused = json.loads(data)
            self.up_to, self.above = int(up_to), {int(number) for number in above}
            self.refused = {int(number): set(indexes) for number, indexes in refused.items()}

    def holds(self, number: int) -> bool:
        """Return whether batch ``number`` was committed (by a predecessor)."""
        return number <= self.up_to or number in self.above

    def answer(self, number: int) -> Answer:
        """Return the answer a predecessor committed for batch ``number``."""
        return set(self.refused.get(number, ())), None, False

    def recorder(self, numbers: list[int], sizes: list[int]) -> Callable[[set[int]], None]:
        """Return the hook that records a transaction of these batches, inside it."""

        def record(refused: set[int]) -> None:
            mine = dict(zip(numbers, split_refused(refused, sizes), strict=True))
            done = self.group_done | set(numbers)
            answers = {**self.group_refused, **{n: r for n, r in mine.items() if r}}
            up_to, above = _advance(self.up_to, self.above, done)
            stored = {str(number): sorted(indexes) for number, indexes in answers.items()}
            data = json.dumps([up_to, sorted(above), stored]).encode()
            self._written = None  # not sure of the earlier attempt's any more
            self.storage.put_record_data(LEDGER, self.key, data, owner_id=self.owner)
            self._written = (data, set(refused))
            self._candidate = (done, answers)
            self.commits += 1
            self.written_at = time.perf_counter()

        return record

    def landed(self) -> set[int] | None:
        """Return the refused claims of the attempt recorded last if it committed after all
        (the record holds what it wrote; no later one can, batch numbers only grow), else
        None. Reads the record."""
        if self._written is None:
            return None
        data, refused = self._written
        return set(refused) if self.storage.record(LEDGER, self.key) == data else None

    def committed(self) -> None:
        """Take in that the transaction recorded last has committed."""
        self.group_done, self.group_refused = self._candidate
        self._written = None

    def answered(self, numbers: list[int]) -> None:
        """Take in that the current group's batches (committed or failed) are answered."""
        self.up_to, self.above = _advance(self.up_to, self.above, numbers)
        self.group_done, self.group_refused = set(), {}
        self._written = None

    def forget(self) -> None:
        """Delete the record (a clean close: nothing can come back)."""
        with contextlib.suppress(Exception):  # a leftover record is small and harmless
            self.storage.delete_record(LEDGER, self.key)


def _advance(up_to: int, above: set[int], numbers: Iterable[int]) -> tuple[int, set[int]]:
    """Return the mark and the numbers above it once ``numbers`` are done too."""
    above = above | {number for number in numbers if number > up_to}
    while up_to + 1 in above:
        up_to += 1
        above.discard(up_to)
    return up_to, above


def split_refused(refused: set[int], sizes: list[int]) -> list[set[int]]:
    """Split the refused indexes of a group's requests into each batch's own."""
    mine, first = [], 0
    for size in sizes:
        end = first + size
        mine.append({i - first for i in refused if first <= i < end})
        first = end
    return mine
