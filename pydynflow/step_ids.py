"""`StepIds`: a set of step ids kept as the bits of one integer.

A running plan keeps a few sets of its step ids (the steps started, completed, active,
parked). Step ids are small non-negative integers, and a built-in ``set`` costs at least
216 bytes even empty, and a world keeps one plan in memory per suspended step. One int and a
slotted object cost about 80 bytes for a plan of up to 200 steps, and membership is a shift
and a mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class StepIds:
    """A mutable set of non-negative ints (step ids), stored as the bits of ``bits``.

    Supports what the engine's bookkeeping uses of a set: ``in``, `add`, `discard`,
    `update`, iteration in ascending order, ``len``, truth, ``-`` (with any iterable of
    ints) and ``==`` (with another `StepIds` or a set).
    """

    __slots__ = ("bits",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.bits = 0
        self.update(ids)

    def __contains__(self, step_id: object) -> bool:
        try:
            return self.bits >> step_id & 1 == 1  # type: ignore[operator]
        except (TypeError, ValueError):  # not an int, or a negative one: never in
            return False

    def add(self, step_id: int) -> None:
        """Add ``step_id`` (a non-negative int)."""
        if step_id < 0:
            raise ValueError(f"step ids are non-negative, got {step_id}")
        self.bits |= 1 << step_id

    def discard(self, step_id: int) -> None:
        """Remove ``step_id`` if present."""
        if step_id >= 0 and self.bits >> step_id & 1:
            self.bits ^= 1 << step_id

    def update(self, ids: Iterable[int]) -> None:
        """Add each of ``ids``."""
        for step_id in ids:
            self.add(step_id)

    def __iter__(self) -> Iterator[int]:
        bits = self.bits
        while bits:
            lowest = bits & -bits
            yield lowest.bit_length() - 1
            bits ^= lowest

    def __len__(self) -> int:
        return self.bits.bit_count()

    def __bool__(self) -> bool:
        return self.bits != 0

    def __sub__(self, other: Iterable[int]) -> StepIds:
        result = StepIds()
        if isinstance(other, StepIds):
            result.bits = self.bits & ~other.bits
        else:
            result.bits = self.bits
            for step_id in other:
                result.discard(step_id)
        return result

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepIds):
            return self.bits == other.bits
        if isinstance(other, (set, frozenset)):
            return len(other) == len(self) and all(step_id in self for step_id in other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a set

    def __repr__(self) -> str:
        return f"StepIds({list(self)})"
