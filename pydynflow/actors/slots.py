"""`WorkerSlots`: the workers of one queue, handed to steps one at a time, in turn.

A step is marked ``running`` only once it holds a slot, and it holds it until its code
returns; so the steps a world stores as ``running`` are never more than its workers, and a
step waiting for a worker stays ``pending`` (after a crash, at most the pool's size of
steps per queue come back "Abnormal termination"). Slots go to waiting steps first come,
first served, as Dynflow's work queue does.

A slot is handed over, never dropped: the holder that gives it back learns which waiter
takes it next and tells that step's supervisor (after committing its own outcome, so the
next step's ``running`` is stored in the same transaction or a later one).

A plan whose step ends may keep the slot for its own next step (`pass_on`), which then moves
to ``running`` in the commit of the step before it: one commit per step of a sequence, where
a step that waits in turn needs one of its own. It may do so for `QUANTUM` seconds from when
the slot left the queue, however many steps that is; after that, if others wait, the slot
goes to the first of them and the plan's next step waits in turn. A step that waits gets
its slot at most a quantum per slot later than strictly first come, first served.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

QUANTUM = 0.02
"""Seconds a plan may pass a slot on to its own next steps while other steps wait for one."""


class SlotClaim:
    """One step's claim on a slot of ``slots``: who to tell (its supervisor), which step."""

    __slots__ = ("plan_id", "since", "slots", "step_id", "supervisor")

    def __init__(self, slots: WorkerSlots, supervisor: Any, plan_id: str, step_id: int) -> None:
        self.slots = slots
        self.supervisor = supervisor
        self.plan_id = plan_id
        self.step_id = step_id
        self.since = 0.0  # when its slot left the queue (`time.monotonic`), once it holds one

    def __repr__(self) -> str:
        return f"<SlotClaim {self.plan_id}/{self.step_id}>"


class WorkerSlots:
    """``size`` slots and the claims waiting for one, shared by the plans of one world."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiting: deque[SlotClaim] = deque()
        self._holders: set[SlotClaim] = set()
        self._lock = threading.Lock()

    def take(self, claim: SlotClaim) -> bool:
        """Give ``claim`` a slot now if one is free; else queue it (False)."""
        with self._lock:
            if self._free:
                self._free -= 1
                self._holders.add(claim)
                claim.since = time.monotonic()
                return True
            self._waiting.append(claim)
            return False

    def give_back(self, claim: SlotClaim) -> SlotClaim | None:
        """Release ``claim``'s slot; return the waiting claim that holds it now, if any."""
        with self._lock:
            if claim not in self._holders:
                return None
            self._holders.discard(claim)
            if self._waiting:
                successor = self._waiting.popleft()
                self._holders.add(successor)
                successor.since = time.monotonic()
                return successor
            self._free += 1
            return None

    def pass_on(self, claim: SlotClaim, step_id: int) -> SlotClaim | None:
        """Hand ``claim``'s slot to step ``step_id`` of the same plan if its quantum allows
        (see the module); return the new holder's claim, or None (then give it back)."""
        with self._lock:
            if claim not in self._holders:
                return None
            if self._waiting and time.monotonic() - claim.since >= QUANTUM:
                return None
            self._holders.discard(claim)
            successor = SlotClaim(self, claim.supervisor, claim.plan_id, step_id)
            successor.since = claim.since
            self._holders.add(successor)
            return successor

    def withdraw(self, claim: SlotClaim) -> bool:
        """Take a waiting ``claim`` out of the queue; False if it is not waiting."""
        with self._lock:
            try:
                self._waiting.remove(claim)
            except ValueError:
                return False
            return True

    def holders(self) -> list[tuple[str, int]]:
        """Return ``(plan id, step id)`` of the claims holding a slot now."""
        with self._lock:
            return sorted((claim.plan_id, claim.step_id) for claim in self._holders)

    @property
    def waiting(self) -> int:
        """Return how many claims wait for a slot."""
        return len(self._waiting)
