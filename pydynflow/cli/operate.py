"""The operator commands of ``pydynflow plans``: resume, skip, cancel, halt, event.

Each one starts a client world and calls its `World` method, which reaches the executor
world owning the plan through the database; what the world refuses is reported on stderr
with exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from pydynflow.cli._common import by_option, client_world, common_options, supported
from pydynflow.cli._output import echo_json, plan_summary
from pydynflow.states import PlanState, Result
from pydynflow.world import World

__all__ = ["cancel", "event", "halt", "resume", "skip"]

_COMPLETED = (Result.SUCCESS, Result.WARNING)


def _who(method: Callable[..., Any], by: str) -> dict[str, Any]:
    """Return the keyword that tells ``method`` who asks, if the World API takes one."""
    options = supported(method, by=by)
    ctx = click.get_current_context()
    if not options and ctx.get_parameter_source("by") is not ParameterSource.DEFAULT:
        click.echo(
            f"warning: --by is not recorded: World.{method.__name__} takes no 'by' yet "
            "(the plan's history names the OS user)",
            err=True,
        )
    return options


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.command()
@click.argument("plan_id")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until the plan is stopped or paused again; exit 1 unless it stopped with "
    "result success or warning.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up after this long (exit 1).",
)
@by_option
@common_options
def resume(
    plan_id: str, wait: bool, timeout: float | None, by: str, db_url: str, as_json: bool
) -> None:
    """Run a paused plan again.

    Its failed steps run again (with a fresh set of Retry attempts), then its finalize
    phase from its start.
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout needs --wait")
    with client_world(db_url) as world:
        plan = world.load(plan_id)
        if plan.state != PlanState.PAUSED:
            _fail(f"execution plan {plan_id} is {plan.state}, not paused: nothing to resume")
        world.start()
        triggered = world.resume(plan_id, **_who(world.resume, by))
        if not wait:
            if as_json:
                echo_json({"plan_id": plan_id, "resumed": True})
            else:
                click.echo(f"resumed execution plan {plan_id}")
            return
        ended = triggered.wait(timeout)
    if as_json:
        echo_json(plan_summary(ended))
    else:
        click.echo(f"execution plan {plan_id} is {ended.state} with result {ended.result}")
    if not (ended.state == PlanState.STOPPED and ended.result in _COMPLETED):
        _fail(f"execution plan {plan_id} did not complete: {ended.state}, {ended.result}")


@click.command()
@click.argument("plan_id")
@click.argument("step_id", type=int)
@by_option
@common_options
def skip(plan_id: str, step_id: int, by: str, db_url: str, as_json: bool) -> None:
    """Skip a failed run step of a paused plan.

    The step and the steps that need its output are marked skipped. The plan stays
    paused: pydynflow plans resume PLAN_ID runs it on without them.
    """
    with client_world(db_url) as world:
        world.start()
        world.skip(plan_id, step_id, **_who(world.skip, by))
    if as_json:
        echo_json({"plan_id": plan_id, "step_id": step_id, "skipped": True})
    else:
        click.echo(
            f"skipped step {step_id} of execution plan {plan_id}; "
            f"`pydynflow plans resume {plan_id}` goes on"
        )


@click.command()
@click.argument("plan_id")
@click.option("--force", is_flag=True, help="Send Abort instead of Cancel.")
@by_option
@common_options
def cancel(plan_id: str, force: bool, by: str, db_url: str, as_json: bool) -> None:
    """Cancel the running Cancellable steps of a plan.

    Every running or suspended Cancellable step is sent Cancel (--force: Abort). Exits 1
    if no step could be asked.
    """
    with client_world(db_url) as world:
        world.start()
        asked = world.cancel(plan_id, force=force, **_who(world.cancel, by))
    if not asked:
        _fail(f"nothing to cancel in execution plan {plan_id}: no Cancellable step is running")
    if as_json:
        echo_json({"plan_id": plan_id, "force": force, "steps": asked})
    else:
        what = "Abort" if force else "Cancel"
        click.echo(f"sent {what} to {asked} step(s) of execution plan {plan_id}")


@click.command()
@click.argument("plan_id")
@by_option
@common_options
def halt(plan_id: str, by: str, db_url: str, as_json: bool) -> None:
    """Stop a plan where it stands.

    Running steps finish their current call, suspended steps stay suspended, nothing new
    starts, and the plan ends stopped.
    """
    with client_world(db_url) as world:
        world.start()
        world.halt(plan_id, **_who(world.halt, by))
    if as_json:
        echo_json({"plan_id": plan_id, "halted": True})
    else:
        click.echo(f"halted execution plan {plan_id}")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _payload(text: str) -> Any:
    """Return the JSON value ``text`` holds (``-``: read it from stdin)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            param_hint="'PAYLOAD'",
        ) from None
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'PAYLOAD'") from None


@click.command()
@click.argument("plan_id")
@click.argument("step_id", type=int)
@click.argument("payload")
@click.option(
    "--event-id",
    metavar="ID",
    help="Deliver once: the same ID again for the same step is not applied twice.",
)
@by_option
@common_options
def event(
    plan_id: str,
    step_id: int,
    payload: str,
    event_id: str | None,
    by: str,
    db_url: str,
    as_json: bool,
) -> None:
    """Send an event to a waiting step.

    PAYLOAD is JSON, or - to read it from stdin. A step that is running or has not started
    yet gets the event once it waits.
    """
    data = _payload(payload)
    options: dict[str, Any] = {}
    if event_id is not None:
        options = supported(World.event, event_id=event_id)
        if not options:
            _fail("--event-id: World.event takes no event_id yet; nothing was sent")
    with client_world(db_url) as world:
        world.start()
        world.event(plan_id, step_id, data, **options, **_who(world.event, by))
    if as_json:
        echo_json({"plan_id": plan_id, "step_id": step_id, "event_id": event_id, "accepted": True})
    else:
        click.echo(f"event accepted by step {step_id} of execution plan {plan_id}")
