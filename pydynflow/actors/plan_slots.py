"""`PlanSlots`: the worker slots a plan supervisor's steps (and its finalize phase) claim,
hold and give back, a part of `pydynflow.actors.plan_supervisor.PlanSupervisor`.

A step that runs on a worker needs a slot of its queue (`pydynflow.actors.slots`). A slot
given back goes to a waiting step of the same plan in the same commit, or to another plan's,
told by `SlotGranted` once this plan's commit is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydynflow.action import is_async_run
from pydynflow.actors.pooled import tell_and_run
from pydynflow.actors.slots import SlotClaim, WorkerSlots
from pydynflow.execution import Advance

if TYPE_CHECKING:
    from pydynflow.actors.runtime import Runtime
    from pydynflow.execution import PlanExecution
    from pydynflow.plan import ExecutionPlan

__all__ = ["FINALIZE_SLOT", "PlanSlots", "SlotGranted"]

FINALIZE_SLOT = 0  # the claim key of the finalize phase (step ids start at 1)
_NO_SLOTS: dict[int, SlotClaim] = {}  # never changed: `_hold` replaces it


@dataclass(slots=True)
class SlotGranted:
    """A worker slot this plan's step waited for is now its own."""

    step_id: int


class PlanSlots:
    """The slot bookkeeping of a `PlanSupervisor` (see the module)."""

    # Rarely set: defaults on the class, so that many waiting plans stay small.
    claims: dict[int, SlotClaim] | None = None  # slot requests waiting, by step id
    # Step id (or FINALIZE_SLOT) -> the slot it holds; slots given back to other plans'
    # waiting steps, to tell them. Empty while a plan waits: shared empties until used.
    holding: dict[int, SlotClaim] = _NO_SLOTS
    handoffs: list[SlotClaim] | tuple[()] = ()

    # What it uses of `PlanSupervisor`.
    plan: ExecutionPlan
    core: PlanExecution
    runtime: Runtime
    broken: BaseException | None
    _actor_ref: Any

    if TYPE_CHECKING:

        def _apply(self, advance: Advance, then: Any = None) -> None: ...
        def _run_finalize(self) -> None: ...

    def _grant(self, advance: Advance) -> None:
        """Take a slot for each step that wants a worker; mark those that got one running."""
        core = self.core
        wanted, advance.want = advance.want, []
        for step_id in wanted:
            if not self._needs_slot(step_id):  # an async run: no worker, no slot
                core.granted(step_id, advance)
                continue
            claim = self._claim(step_id)
            if claim.slots.take(claim):
                self._use(claim, advance)
            else:
                if self.claims is None:
                    self.claims = {}
                self.claims[step_id] = claim

    def _slot_granted(self, step_id: int) -> None:
        """A slot a waiting step claimed was handed to it."""
        claim = self.claims.pop(step_id, None) if self.claims is not None else None
        if not self.claims:
            self.claims = None  # a popped dict keeps its size: many plans wait like this
        if claim is None:  # withdrawn meanwhile; `_withdraw` gave it back
            return
        advance = Advance()
        self._use(claim, advance)
        self._apply(advance)

    def _use(self, claim: SlotClaim, advance: Advance) -> None:
        """Put a slot just taken to work, or give it back if it is not needed after all."""
        step_id = claim.step_id
        self._hold(claim)
        if self.broken is not None:
            self._release(step_id, advance)
        elif step_id == FINALIZE_SLOT:
            self._run_finalize()
        elif not self.core.granted(step_id, advance):
            self._release(step_id, advance)

    def _needs_slot(self, step_id: int) -> bool:
        """Return whether a step's code runs on a worker (an async run runs on the loop)."""
        return not is_async_run(self.plan.steps[step_id].action_class)

    def _claim(self, step_id: int) -> SlotClaim:
        return SlotClaim(self._queue_slots(step_id), self._actor_ref, self.plan.id, step_id)

    def _queue_slots(self, step_id: int) -> WorkerSlots:
        queue = "default" if step_id == FINALIZE_SLOT else self.plan.steps[step_id].queue
        return self.runtime.slots_of(queue)

    def _release(self, step_id: int, advance: Advance) -> None:
        """Give back the slot ``step_id`` holds: to a step of this plan waiting for one
        (granted into ``advance``, so in the same commit), or to another plan's (told once
        this plan's commit is sent, see `_hand_off`)."""
        claim = self.holding.pop(step_id, None) if self.holding else None
        if claim is None:
            return
        if not self.holding:
            self.holding = _NO_SLOTS
        successor = claim.slots.give_back(claim)
        if successor is None:
            return
        if successor.supervisor is not self._actor_ref:
            if not self.handoffs:
                self.handoffs = []
            self.handoffs.append(successor)  # type: ignore[union-attr]
            return
        if self.claims is not None:  # one of ours waited: it holds the slot now
            self.claims.pop(successor.step_id, None)
        self._use(successor, advance)

    def _pass_on_or_release(self, step_id: int, advance: Advance) -> None:
        """``step_id``'s code returned: hand its slot to a step of this plan that wants one of
        the same queue in ``advance`` (it moves to ``running`` in this same commit), if the
        slot's quantum allows (`WorkerSlots.pass_on`); else `_release` it."""
        claim = self.holding.get(step_id) if self.holding else None
        if claim is not None and advance.want:
            for wanted in advance.want:
                if self._needs_slot(wanted) and self._queue_slots(wanted) is claim.slots:
                    successor = claim.slots.pass_on(claim, wanted)
                    if successor is not None:
                        del self.holding[step_id]
                        advance.want.remove(wanted)
                        self._use(successor, advance)
                        return
                    break  # its quantum is spent: the slot goes to the first waiting
        self._release(step_id, advance)

    def _hand_off(self) -> None:
        """Tell the other plans whose waiting steps got this plan's slots."""
        while self.handoffs:
            claim = self.handoffs.pop(0)  # type: ignore[union-attr]
            if not tell_and_run(claim.supervisor, SlotGranted(claim.step_id)):
                successor = claim.slots.give_back(claim)  # its plan ended: pass it on
                if successor is not None:
                    self.handoffs.append(successor)  # type: ignore[union-attr]
        self.handoffs = ()

    def _hold(self, claim: SlotClaim) -> None:
        if self.holding is _NO_SLOTS:
            self.holding = {}
        self.holding[claim.step_id] = claim

    def _withdraw(self, step_ids: Any, advance: Advance) -> None:
        if not step_ids or self.claims is None:
            return
        for step_id in step_ids:
            claim = self.claims.pop(step_id, None)
            if claim is not None and not claim.slots.withdraw(claim):
                # Handed to us meanwhile (its SlotGranted is on its way): give it back.
                self._hold(claim)
                self._release(step_id, advance)

    def _release_all(self) -> None:
        """Give back every slot held and withdraw every claim (the plan ends here)."""
        advance = Advance()
        if self.claims:
            self._withdraw(list(self.claims), advance)
        for step_id in list(self.holding):
            self._release(step_id, advance)
        self._hand_off()
