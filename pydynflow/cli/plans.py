"""``pydynflow plans``: list and show execution plans, act on them as an operator, and
delete finished ones.

Reads go through a client world that is not started (they leave no trace in the database);
operator commands start one, whose calls reach the executor world that owns the plan
through the database.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import click

from pydynflow.cli._common import client_world, common_options
from pydynflow.cli._output import (
    echo_json,
    human_time,
    plan_details,
    plan_summary,
    table,
)
from pydynflow.cli.operate import cancel, event, halt, resume, skip
from pydynflow.plan import ExecutionPlan, HistoryEntry
from pydynflow.retention import BATCH_SIZE
from pydynflow.states import PlanState, Result

__all__ = ["plans"]

_STATES = [state.value for state in PlanState]
_RESULTS = [result.value for result in Result]


@click.group()
def plans() -> None:
    """List, show and operate execution plans."""


# The filters `plans list` and `plans delete` share (their --state differs: its default).
_result_filter = click.option(
    "--result",
    "results",
    multiple=True,
    type=click.Choice(_RESULTS),
    help="Only plans with this result (repeat for several).",
)
_label_filter = click.option(
    "--label", "labels", multiple=True, help="Only plans with this label (repeat for several)."
)


@plans.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_STATES),
    help="Only plans in this state (repeat for several).",
)
@_result_filter
@_label_filter
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many plans, the most recently started first.",
)
@common_options
def list_plans(
    states: tuple[str, ...],
    results: tuple[str, ...],
    labels: tuple[str, ...],
    limit: int,
    db_url: str,
    as_json: bool,
) -> None:
    """List plans, the most recently started first."""
    with client_world(db_url) as world:
        found = world.plans(
            state=list(states) or None,
            result=list(results) or None,
            label=list(labels) or None,
            limit=limit,
        )
    if as_json:
        echo_json([plan_summary(plan) for plan in found])
        return
    if not found:
        click.echo("no execution plans match")
        return
    rows = [
        (
            plan.id,
            plan.state,
            plan.result,
            human_time(plan.started_at),
            human_time(plan.ended_at),
            plan.label,
        )
        for plan in found
    ]
    click.echo(table(("ID", "STATE", "RESULT", "STARTED", "ENDED", "LABEL"), rows))


@plans.command()
@click.argument("plan_id")
@click.option("--backtrace", is_flag=True, help="Show the backtraces of step errors.")
@common_options
def show(plan_id: str, backtrace: bool, db_url: str, as_json: bool) -> None:
    """Show a plan: its steps, their errors, its history.

    Each step with its phase, state, attempts and times (UTC); --json adds the input and
    output of each step's action and the backtraces.
    """
    with client_world(db_url) as world:
        plan = world.load(plan_id)
    if as_json:
        echo_json(plan_details(plan))
        return
    click.echo(_describe(plan, backtrace=backtrace))


def _describe(plan: ExecutionPlan, *, backtrace: bool) -> str:
    """Return the text ``plans show`` prints."""
    summary = table(
        ("id", plan.id),
        [
            ("label", plan.label),
            ("state", plan.state),
            ("result", plan.result),
            ("started", human_time(plan.started_at)),
            ("ended", human_time(plan.ended_at)),
            ("real time", f"{plan.real_time:.3f} s"),
            ("execution time", f"{plan.execution_time:.3f} s"),
            ("progress", f"{plan.progress():.0%}"),
        ],
    )
    steps = [step for _, step in sorted(plan.steps.items())]
    parts = [
        summary,
        table(
            ("STEP", "PHASE", "STATE", "ATTEMPTS", "STARTED", "ENDED", "ACTION"),
            [
                (
                    step.id,
                    step.phase,
                    step.state,
                    step.attempts,
                    human_time(step.started_at),
                    human_time(step.ended_at),
                    step.action_class_name,
                )
                for step in steps
            ],
        ),
    ]
    errors = []
    for step in steps:
        if step.error is None:
            continue
        errors.append(f"step {step.id}: {' '.join(str(step.error).split())}")
        if backtrace:
            errors.extend(f"    {line}" for line in step.error.backtrace)
    if not errors and plan.error is not None:  # a plan that could not be loaded whole
        errors.append(f"plan: {' '.join(str(plan.error).split())}")
    if errors:
        parts.append("ERRORS\n" + "\n".join(errors))
    parts.append(
        table(
            ("TIME", "HISTORY", "WORLD", "DETAILS"),
            [
                (human_time(entry.time), entry.name, (entry.world_id or "")[:8], _details(entry))
                for entry in plan.history
            ],
        )
    )
    return "\n\n".join(parts)


def _details(entry: HistoryEntry) -> str:
    """Return a history entry's details as ``key=value`` pairs."""
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in (entry.details or {}).items()
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class Duration(click.ParamType):
    """A duration such as ``30d``, ``12h``, ``1d12h`` or ``90s`` (w, d, h, m, s)."""

    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        """Return ``value`` as a timedelta, or fail as a usage error."""
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        parts = _DURATION.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            self.fail(f"{value!r} is not a duration such as 30d, 12h, 1d12h or 90s", param, ctx)
        return sum(
            (timedelta(**{_UNITS[unit]: float(number)}) for number, unit in parts), timedelta()
        )


@plans.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_STATES),
    help="Only plans in this state (repeat for several); default: stopped (and paused with "
    "--include-paused). Running plans are never deleted.",
)
@_result_filter
@_label_filter
@click.option(
    "--older-than",
    type=Duration(),
    help="Only plans that stopped longer ago than this (30d, 12h, 1d12h, 90s).",
)
@click.option(
    "--backup",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Append each deleted plan to FILE as a JSON line before deleting it.",
)
@click.option("--include-paused", is_flag=True, help="Delete paused plans too.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=BATCH_SIZE,
    show_default=True,
    help="Plans deleted per transaction at most.",
)
@click.option("--dry-run", is_flag=True, help="Only count the plans that would be deleted.")
@common_options
def delete(
    states: tuple[str, ...],
    results: tuple[str, ...],
    labels: tuple[str, ...],
    older_than: timedelta | None,
    backup: str | None,
    include_paused: bool,
    batch_size: int,
    dry_run: bool,
    db_url: str,
    as_json: bool,
) -> None:
    """Delete finished plans with all their rows, in short transactions.

    By default every stopped plan; paused plans only with --include-paused; plans that run
    are never deleted. Sub-plans of a plan still running, and plans a waiting chained plan
    depends on, are kept.
    """
    if backup is not None and dry_run:
        raise click.UsageError("--backup and --dry-run do not go together: nothing is deleted")
    if PlanState.PAUSED in states and not include_paused:
        raise click.UsageError("--state paused needs --include-paused")
    with client_world(db_url) as world:
        try:
            deleted = world.delete_plans(
                state=list(states) or None,
                result=list(results) or None,
                label=list(labels) or None,
                older_than=older_than,
                batch_size=batch_size,
                backup=backup,
                include_paused=include_paused,
                dry_run=dry_run,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    if as_json:
        echo_json({"deleted": deleted, "dry_run": dry_run, "backup": backup})
    elif dry_run:
        click.echo(f"would delete {deleted} execution plan(s)")
    else:
        saved = f"; backup appended to {backup}" if backup is not None else ""
        click.echo(f"deleted {deleted} execution plan(s){saved}")


for _command in (resume, skip, cancel, halt, event):
    plans.add_command(_command)
