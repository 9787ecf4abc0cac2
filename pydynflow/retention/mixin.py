"""`RetentionMixin`: `World.delete_plans` and the world's plan cleaner (``keep_plans_for``),
kept out of ``world.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydynflow.clock import wall_time
from pydynflow.retention.cleaner import PlanCleaner
from pydynflow.retention.deletion import delete_selected
from pydynflow.states import PlanState, Result
from pydynflow.storage.retention import BATCH_SIZE, DeletedBatch, PlanSelection

if TYPE_CHECKING:
    from pydynflow.actors.runtime import Runtime
    from pydynflow.storage import Storage

__all__ = ["RetentionMixin", "retention_settings"]

_STATES = frozenset(state.value for state in PlanState)
_RESULTS = frozenset(result.value for result in Result)


def retention_settings(
    keep_plans_for: timedelta | None,
    cleaner_interval: float | timedelta,
    cleaner_backup: str | os.PathLike[str] | None,
) -> tuple[timedelta | None, float, str | os.PathLike[str] | None]:
    """Return `World`'s ``keep_plans_for``, ``cleaner_interval`` (seconds) and
    ``cleaner_backup`` checked.

    Raises:
        ValueError: ``keep_plans_for`` not None nor a timedelta >= 0, or an interval that is
            not a positive number of seconds (or timedelta).
    """
    if keep_plans_for is not None and (
        not isinstance(keep_plans_for, timedelta) or keep_plans_for < timedelta(0)
    ):
        raise ValueError(f"keep_plans_for must be None or a timedelta >= 0, got {keep_plans_for!r}")
    if isinstance(cleaner_interval, timedelta):
        cleaner_interval = cleaner_interval.total_seconds()
    if (
        isinstance(cleaner_interval, bool)
        or not isinstance(cleaner_interval, int | float)
        or not cleaner_interval > 0
    ):
        raise ValueError(
            f"cleaner_interval must be a positive number of seconds, got {cleaner_interval!r}"
        )
    return keep_plans_for, float(cleaner_interval), cleaner_backup


class RetentionMixin:
    """Deleting finished plans (`delete_plans`) and the cleaner that does it periodically.

    Plans that run are never deleted; paused plans only when asked explicitly. The cleaner
    (``World(keep_plans_for=...)``, off by default, executor worlds only) deletes stopped
    plans that ended longer ago than ``keep_plans_for``.
    """

    # What it uses of `World` (set by `World.__init__`).
    storage: Storage
    executor: bool | str
    clock: Any
    log: Any
    keep_plans_for: timedelta | None
    cleaner_interval: float
    cleaner_backup: str | os.PathLike[str] | None
    _runtime: Runtime | None
    _cleaner: PlanCleaner | None = None

    @property
    def plan_cleaner(self) -> PlanCleaner | None:
        """The world's plan cleaner while it runs (None without ``keep_plans_for``, in a
        client world, and before `start` or after `stop`)."""
        return self._cleaner

    def delete_plans(
        self,
        *,
        state: str | Iterable[str] | None = None,
        result: str | Iterable[str] | None = None,
        older_than: timedelta | datetime | None = None,
        batch_size: int = BATCH_SIZE,
        backup: str | os.PathLike[str] | None = None,
        include_paused: bool = False,
        label: str | Iterable[str] | None = None,
        dry_run: bool = False,
        progress: Callable[[DeletedBatch], Any] | None = None,
    ) -> int:
        """Delete execution plans with every row that belongs to them; return how many.

        Plans are deleted in batches of at most ``batch_size``, each in a write transaction
        of its own sized to last a few tens of milliseconds, so that the engine's writes
        never wait long behind a deletion. Works from a client world, started or not.

        Plans are kept, whatever the filters say, while a plan that is not stopped may
        still need them: the sub-plans of a caller that is not stopped, a plan with a
        sub-plan that is not stopped, and a plan a waiting chained plan is chained after.

        Args:
            state: a state or several; default ``stopped`` (and ``paused`` with
                ``include_paused``). ``scheduled`` and ``planned`` plans are deleted only
                when named. ``pending``, ``planning`` and ``running`` plans are never deleted.
            result: only plans with this result (or one of these).
            older_than: a timedelta: only plans that stopped longer ago than that by the
                world's clock (plans not stopped: that started longer ago); a datetime: that
                stopped (started) before it (naive means UTC).
            batch_size: plans deleted in one transaction at most.
            backup: a file to append one JSON line per deleted plan to, before its batch is
                deleted (flushed and fsynced): the plan, its actions and its steps as
                `load` shows them (`pydynflow.retention.plan_record`).
            include_paused: whether paused plans may be deleted (by default, or when named
                in ``state``).
            label: only plans with this label (or one of these).
            dry_run: delete nothing (and write no backup); return how many would be deleted.
            progress: called after each batch's commit with a `DeletedBatch`.

        Raises:
            ValueError: an unknown state or result, a state that is never deleted,
                ``paused`` without ``include_paused``, a negative ``older_than`` or a
                ``batch_size`` that is not a positive int.
            PersistenceError: if the database fails (batches committed before stay deleted).
        """
        selection = PlanSelection(
            states=_states(state, include_paused),
            results=_values("result", result, _RESULTS),
            labels=_values("label", label, None),
            before=self._cutoff(older_than),
        )
        if dry_run:
            return self.storage.count_deletable_plans(selection)
        return delete_selected(
            self.storage,
            selection,
            batch_size=batch_size,
            backup=backup,
            progress=progress,
            log=self.log,
        )

    def _cutoff(self, older_than: timedelta | datetime | None) -> datetime | None:
        """Return the time before which plans are old enough, or None for any age."""
        if older_than is None:
            return None
        if isinstance(older_than, timedelta):
            if older_than < timedelta(0):
                raise ValueError(f"older_than must not be negative, got {older_than!r}")
            return wall_time(self._clock()) - older_than
        if isinstance(older_than, datetime):
            return older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        raise ValueError(f"older_than must be a timedelta or a datetime, got {older_than!r}")

    def _clock(self) -> Any:
        runtime = self._runtime
        return runtime.clock if runtime is not None else self.clock

    def _start_cleaner(self) -> None:
        """Start the plan cleaner of an executor world with ``keep_plans_for``."""
        runtime = self._runtime
        if self.keep_plans_for is None or not self.executor or runtime is None:
            return
        self._cleaner = PlanCleaner(
            self.storage,
            runtime.clock,
            keep_for=self.keep_plans_for,
            interval=self.cleaner_interval,
            backup=self.cleaner_backup,
            log=self.log,
        )
        self._cleaner.start()

    def _stop_cleaner(self, *, wait: bool = True) -> None:
        """Stop it (``wait``: for its run in progress, which ends after its current batch)."""
        cleaner, self._cleaner = self._cleaner, None
        if cleaner is not None:
            cleaner.stop(wait=wait)


def _values(name: str, value: str | Iterable[str] | None, known: frozenset[str] | None) -> Any:
    """Return a filter value as a tuple of strings (None: no filter)."""
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else tuple(str(item) for item in value)
    if known is not None:
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return values


def _states(state: str | Iterable[str] | None, include_paused: bool) -> tuple[str, ...]:
    """Return the states to delete plans in (see `RetentionMixin.delete_plans`)."""
    if state is None:
        return ("stopped", "paused") if include_paused else ("stopped",)
    states: tuple[str, ...] = _values("state", state, _STATES)
    if PlanState.PAUSED in states and not include_paused:
        raise ValueError("paused plans are deleted only with include_paused=True")
    return states
