"""How commands print: aligned text tables, UTC ISO times, JSON, and plans as plain data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from pydynflow.plan import ExecutionPlan, HistoryEntry, Step, StepError

__all__ = [
    "echo_json",
    "history_data",
    "human_time",
    "iso_time",
    "plan_details",
    "plan_summary",
    "step_data",
    "table",
]

NONE = "-"
"""What a table shows for a missing value."""


def _utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC (a naive time is taken as UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_time(moment: datetime | None) -> str | None:
    """Return ``moment`` as a full ISO 8601 UTC time (for JSON), or None."""
    return None if moment is None else _utc(moment).isoformat()


def human_time(moment: datetime | None) -> str:
    """Return ``moment`` as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, to the second) for a table."""
    return NONE if moment is None else _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: object) -> str:
    text = NONE if value is None or value == "" else str(value)
    return " ".join(text.split())  # a newline or a tab would break the columns


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return ``rows`` under ``headers`` as columns two spaces apart, no trailing blanks."""
    lines = [[_cell(header) for header in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def plan_summary(plan: ExecutionPlan) -> dict[str, Any]:
    """Return what ``plans list`` shows of a plan."""
    return {
        "id": plan.id,
        "label": plan.label,
        "state": str(plan.state),
        "result": str(plan.result),
        "started_at": iso_time(plan.started_at),
        "ended_at": iso_time(plan.ended_at),
        "real_time": plan.real_time,
        "execution_time": plan.execution_time,
    }


def _error_data(error: StepError | None) -> dict[str, Any] | None:
    return None if error is None else error.to_dict()


def step_data(step: Step) -> dict[str, Any]:
    """Return a step as JSON-compatible data, with its action's input and output."""
    return {
        "id": step.id,
        "action_id": step.action_id,
        "action_class": step.action_class_name,
        "phase": str(step.phase),
        "state": str(step.state),
        "attempts": step.attempts,
        "started_at": iso_time(step.started_at),
        "ended_at": iso_time(step.ended_at),
        "real_time": step.real_time,
        "execution_time": step.execution_time,
        "progress_done": step.progress_done,
        "progress_weight": step.progress_weight,
        "queue": step.queue,
        "children": list(step.children),
        "error": _error_data(step.error),
        "input": step.input,
        "output": step.output,
    }


def history_data(entry: HistoryEntry) -> dict[str, Any]:
    """Return a history entry as JSON-compatible data."""
    return {
        "time": iso_time(entry.time),
        "name": entry.name,
        "world_id": entry.world_id,
        "details": entry.details,
    }


def plan_details(plan: ExecutionPlan) -> dict[str, Any]:
    """Return what ``plans show`` shows of a plan: its summary, steps and history."""
    return {
        **plan_summary(plan),
        "progress": plan.progress(),
        "error": _error_data(plan.error),
        "steps": [step_data(step) for _, step in sorted(plan.steps.items())],
        "history": [history_data(entry) for entry in plan.history],
    }
