"""Singleton locks: the coordinator records that keep one active plan per `Singleton` class.

A lock is the record ``(class name, "pydynflow.SingletonLock")``, owned by the id of the plan
holding it; its data says which world took it and when. `Storage.take_record` takes it, so of
two planners (threads, processes or hosts) exactly one gets it. A lock is void, and the next
taker takes it over, once its plan is stopped, or when its plan does not exist
`ORPHANED_AFTER` seconds after the lock was taken: a plan is stored only once it is planned,
so a younger lock of a missing plan belongs to a planning in progress, an older one to a
planning that died or whose plan was never stored. A plan lets go of its locks in the
transaction that stops it or pauses it for a person (`release_requests`, carried by its
change set). When a world is invalidated, the locks it took for plans it never stored (a
planning its death cut short) go at once (`release_unstored_of`), as Dynflow's invalidation
releases a dead world's planning locks.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydynflow.errors import DynflowError
from pydynflow.mixins.singleton import already_active

if TYPE_CHECKING:
    from pydynflow.storage.store import Storage

__all__ = [
    "LOCK_CLASS",
    "ORPHANED_AFTER",
    "check_singleton_lock",
    "release_requests",
    "release_unstored_of",
    "take_singleton_lock",
]

LOCK_CLASS = "pydynflow.SingletonLock"
"""The coordinator record class of singleton locks; the record id is the action class name."""
ORPHANED_AFTER = 300.0
"""Seconds after which the lock of a plan that was never stored is void."""


def take_singleton_lock(
    storage: Storage, action_class_name: str, plan_id: str, world_id: str | None = None
) -> str | None:
    """Take the lock of ``action_class_name`` for the plan ``plan_id`` unless an active plan
    holds it; return the plan holding it afterwards (``plan_id`` if taken)."""
    data = {"plan_id": plan_id, "world_id": world_id, "taken_at": time.time()}
    return storage.take_record(
        LOCK_CLASS,
        action_class_name,
        plan_id,
        json.dumps(data).encode(),
        stale=functools.partial(_void, storage),
    )


def check_singleton_lock(
    storage: Storage, action_class_name: str, plan_id: str, world_id: str | None = None
) -> DynflowError | None:
    """Return why a run step of ``action_class_name`` in the plan ``plan_id`` must not run,
    or None: the plan holds the lock, or took it again (no active plan held it)."""
    if storage.record_owner(LOCK_CLASS, action_class_name) == plan_id:
        return None  # the usual case: one read
    holder = take_singleton_lock(storage, action_class_name, plan_id, world_id)
    if holder == plan_id:
        return None
    return DynflowError(
        f"{already_active(action_class_name, holder)}, so execution plan {plan_id} cannot run it"
    )


def release_requests(
    action_class_names: Iterable[str], plan_id: str
) -> tuple[tuple[str, str, str], ...]:
    """Return the record deletions that let go of ``plan_id``'s locks (if it holds them)."""
    return tuple((LOCK_CLASS, name, plan_id) for name in sorted(action_class_names))


def release_unstored_of(storage: Storage, world_id: str) -> list[str]:
    """Let go of the locks the world ``world_id`` took for plans that are not stored (call
    it once that world is invalidated: its plannings will never store them); return the
    action class names released. A stored plan keeps its lock: its recovery decides."""
    released = []
    for name, holder, data in storage.records_of(LOCK_CLASS):
        if holder is None or _data(data).get("world_id") != world_id:
            continue
        if storage.step_state(holder) is None and storage.delete_record(LOCK_CLASS, name, holder):
            released.append(name)
    return released


def _void(storage: Storage, holder: str | None, data: bytes | None) -> bool:
    """Return whether the lock ``holder`` holds is void (see the module)."""
    if holder is None:
        return True
    state = storage.step_state(holder)  # the plan's state, or None if it is not stored
    if state is not None:
        return state == "stopped"
    taken_at = _taken_at(data)
    return taken_at is None or time.time() - taken_at > ORPHANED_AFTER


def _taken_at(data: bytes | None) -> float | None:
    taken_at = _data(data).get("taken_at")
    return float(taken_at) if isinstance(taken_at, int | float) else None


def _data(data: bytes | None) -> dict[str, Any]:
    """Return what a lock record says (empty if it says nothing readable)."""
    try:
        decoded = json.loads(data or b"{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
