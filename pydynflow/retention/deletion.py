"""One deletion run: plans chosen by a `PlanSelection`, deleted in batches, each batch first
written to an optional JSON-lines backup (flushed and fsynced before its delete)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydynflow.flows import encode_flow
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.references import OutputReference
from pydynflow.states import PlanState

if TYPE_CHECKING:
    from pydynflow.storage import Storage
    from pydynflow.storage.retention import DeletedBatch, PlanSelection

__all__ = ["BACKUP_FORMAT", "PlanBackup", "delete_selected", "plan_record"]

BACKUP_FORMAT = "pydynflow.plan/1"
"""The ``format`` of each backup line; a change to the record's shape gets a new one."""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _json_default(value: Any) -> Any:
    if isinstance(value, OutputReference):  # as the codec stores it
        return {"__output_reference__": value.to_dict()}
    raise TypeError(f"a value of type {type(value).__qualname__} is not JSON-serialisable")


def _action_record(action: ActionRecord) -> dict[str, Any]:
    return {
        "id": action.id,
        "action_class": action.action_class_name,
        "input": action.input,
        "output": action.output,
        "plan_step_id": action.plan_step_id,
        "run_step_id": action.run_step_id,
        "finalize_step_id": action.finalize_step_id,
        "caller_execution_plan_id": action.caller_execution_plan_id,
        "caller_action_id": action.caller_action_id,
    }


def _step_record(step: Step) -> dict[str, Any]:
    return {
        "id": step.id,
        "action_id": step.action_id,
        "action_class": step.action_class_name,
        "phase": str(step.phase),
        "state": str(step.state),
        "error": None if step.error is None else step.error.to_dict(),
        "started_at": _iso(step.started_at),
        "ended_at": _iso(step.ended_at),
        "real_time": step.real_time,
        "execution_time": step.execution_time,
        "progress_done": step.progress_done,
        "progress_weight": step.progress_weight,
        "attempts": step.attempts,
        "queue": step.queue,
        "children": list(step.children),
    }


def plan_record(plan: ExecutionPlan, delayed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a plan as one backup line holds it: the plan's fields, its actions and its
    steps as the read side shows them (`pydynflow.storage.Storage.load_plan`), and its
    ``delayed`` record if it has one. A plan whose rows did not load has ``valid`` false,
    its ``error``, and no actions or steps."""
    return {
        "format": BACKUP_FORMAT,
        "plan": {
            "id": plan.id,
            "label": plan.label,
            "state": str(plan.state),
            "result": str(plan.result),
            "started_at": _iso(plan.started_at),
            "ended_at": _iso(plan.ended_at),
            "real_time": plan.real_time,
            "execution_time": plan.execution_time,
            "root_plan_step_id": plan.root_plan_step_id,
            "run_flow": encode_flow(plan.run_flow),
            "finalize_flow": encode_flow(plan.finalize_flow),
            "history": [{**entry.to_dict(), "time": _iso(entry.time)} for entry in plan.history],
            "valid": plan.valid,
            "error": None if plan.exception is None else plan.exception.to_dict(),
        },
        "actions": [_action_record(action) for _, action in sorted(plan.actions.items())],
        "steps": [_step_record(step) for _, step in sorted(plan.steps.items())],
        "delayed": delayed,
    }


class PlanBackup:
    """A JSON-lines file that deleted plans are appended to, one line per plan
    (`plan_record`); each batch is flushed and fsynced before its plans are deleted.

    Args:
        path: the file; created if missing, appended to if not.
        storage: where the delayed records of scheduled plans are read from.
    """

    def __init__(self, path: str | os.PathLike[str], storage: Storage) -> None:
        self.path = Path(path)
        self.storage = storage
        self.written = 0
        """Lines written so far."""
        self._file: TextIO = self.path.open("a", encoding="utf-8")

    def write(self, plans: list[ExecutionPlan]) -> None:
        """Append one line per plan, then flush and fsync the file."""
        lines = []
        for plan in plans:
            delayed = None
            if plan.state == PlanState.SCHEDULED:
                found = self.storage.delayed_plan(plan.id)
                delayed = None if found is None else _delayed_data(found)
            record = plan_record(plan, delayed)
            lines.append(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.written += len(lines)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> PlanBackup:
        """Return the backup; close it when the ``with`` block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _delayed_data(delayed: Any) -> dict[str, Any]:
    return {
        "start_at": _iso(delayed.start_at),
        "start_before": _iso(delayed.start_before),
        "frozen": delayed.frozen,
        "blocked_by": list(delayed.blocked_by),
        "args": delayed.args,
    }


def delete_selected(
    storage: Storage,
    selection: PlanSelection,
    *,
    batch_size: int,
    backup: str | os.PathLike[str] | None = None,
    progress: Callable[[DeletedBatch], Any] | None = None,
    stop: Callable[[], bool] | None = None,
    log: Any = None,
) -> int:
    """Delete what ``selection`` matches in batches (each first appended to ``backup``, if
    given); log how many; return how many were deleted."""
    started = time.perf_counter()
    longest = 0.0
    batches = 0

    def counted(batch: DeletedBatch) -> None:
        nonlocal longest, batches
        batches += 1
        longest = max(longest, batch.seconds)
        if progress is not None:
            progress(batch)

    if backup is None:
        deleted = storage.delete_plans_where(
            selection, batch_size=batch_size, progress=counted, stop=stop
        )
    else:
        with PlanBackup(backup, storage) as file:
            deleted = storage.delete_plans_where(
                selection,
                batch_size=batch_size,
                before_delete=file.write,
                progress=counted,
                stop=stop,
            )
    if log is not None:
        log.info(
            "deleted execution plans",
            deleted=deleted,
            states=list(selection.states),
            before=_iso(selection.before),
            batches=batches,
            longest_transaction_s=round(longest, 4),
            seconds=round(time.perf_counter() - started, 3),
            backup=None if backup is None else str(backup),
        )
    return deleted
