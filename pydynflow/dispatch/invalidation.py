"""`Invalidator`: what a live executor world does about dead worlds and their plans.

A world is dead when its heartbeat is older than ``validity_timeout``, or, for an executor
world, as soon as its process no longer holds its world lock
(`pydynflow.storage.world_lock`). The world that deletes its record (one does: a
conditional delete) hands its unapplied requests back to every executor and, being an
executor, continues its running plans here: their steps that were running become "Abnormal
termination" and their policies apply (`pydynflow.recovery.recover_plan`). A plan's world
is the one of its last "start execution" history entry; a running plan whose world has no
record is an orphan, recovered by one world (a recovery record decides which).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydynflow.dispatch.registry import WorldRegistry
from pydynflow.storage.world_lock import world_is_dead
from pydynflow.world_info import WorldInfo


class Invalidator:
    """Find dead worlds, invalidate them, and continue their orphaned plans here.

    Args:
        registry: this world's registry.
        continue_plan: how this executor world takes an orphaned plan over (by id).
        log: the world's logger.
        continue_interrupted: how it continues the plans a stop or a crash paused, once a
            world left (a world that stops gracefully pauses the plans it ran).
    """

    def __init__(
        self,
        registry: WorldRegistry,
        continue_plan: Callable[[str], Any],
        log: Any,
        continue_interrupted: Callable[[], Any] = lambda: None,
    ) -> None:
        self.registry = registry
        self.continue_plan = continue_plan
        self.log = log
        self.continue_interrupted = continue_interrupted
        self._known: set[str] = set()  # the world ids the last sweep found

    def sweep(self, *, recover: bool = True) -> list[WorldInfo]:
        """Invalidate every dead world found now; return them. With ``recover``, continue
        the orphaned plans too (`recover_orphans`)."""
        registry, storage = self.registry, self.registry.storage
        invalidated = []
        found = registry.worlds()
        known, self._known = self._known, {info.id for info in found}
        # A world that left since (another world invalidated it, or it stopped with steps
        # still running) may have left running plans: look for orphans then, not always
        # (it reads the history of every running plan).
        gone = bool(known - self._known)
        for info in found:
            if info.id == registry.world_id:
                continue
            if not info.alive:
                gone = registry.invalidate(info.id, if_dead=True)
            elif info.executor and world_is_dead(storage, info.id):
                gone = registry.invalidate(info.id)
            else:
                continue
            if gone:
                self._log(info)
                invalidated.append(info)
        if (invalidated or gone) and recover:
            try:
                self.recover_orphans()
                self.continue_interrupted()  # what a world that left paused when it stopped
            except BaseException:
                self._known = known  # the next sweep sees them gone again, and retries
                raise
        return invalidated

    def invalidate(self, world_id: str) -> bool:
        """Invalidate one world now, dead or not; continue its plans here."""
        found = {info.id: info for info in self.registry.worlds()}.get(world_id)
        if not self.registry.invalidate(world_id):
            return False
        if found is not None:
            self._log(found, requested=True)
        self.recover_orphans()
        return True

    def recover_orphans(self, recover: Callable[[str], Any] | None = None) -> list[str]:
        """Take every running plan whose world has no record; hand each to ``recover``
        (default: ``continue_plan``); return their ids."""
        registry = self.registry
        registered = {record["id"] for record in registry.storage.world_records()}
        taken = []
        for plan_id, owner in registry.storage.running_plan_owners().items():
            if owner in registered or not registry.take_orphan(plan_id):
                continue
            taken.append(plan_id)
            (recover or self.continue_plan)(plan_id)
        if taken and recover is None:
            self.log.warning("continuing plans whose world died", plan_ids=taken)
        return taken

    def _log(self, info: WorldInfo, *, requested: bool = False) -> None:
        self.log.warning(
            "invalidated a world on request" if requested else "invalidated a dead world",
            dead_world_id=info.id,
            dead_world=info.name,
            executor=info.executor,
            hostname=info.hostname,
            pid=info.pid,
            last_seen=info.last_seen.isoformat(),
        )
