"""``pydynflow worlds``: the worlds sharing the database, and the dead ones among them."""

from __future__ import annotations

from typing import Any

import click

from pydynflow.cli._common import client_world, common_options
from pydynflow.cli._output import echo_json, human_time, iso_time, table
from pydynflow.world_info import WorldInfo

__all__ = ["worlds"]

HEADERS = ("ID", "NAME", "KIND", "HOST", "PID", "QUEUES", "STARTED_AT", "LAST_SEEN", "ALIVE")


def world_data(info: WorldInfo) -> dict[str, Any]:
    """Return a world's record as JSON-compatible data."""
    return {
        "id": info.id,
        "name": info.name,
        "kind": _kind(info),
        "executor": info.executor,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": dict(info.queues),
        "started_at": iso_time(info.started_at),
        "last_seen": iso_time(info.last_seen),
        "alive": info.alive,
    }


def _kind(info: WorldInfo) -> str:
    return "executor" if info.executor else "client"


def _rows(found: list[WorldInfo]) -> list[tuple[object, ...]]:
    return [
        (
            info.id,
            info.name,
            _kind(info),
            info.hostname,
            info.pid,
            ",".join(f"{queue}={size}" for queue, size in info.queues.items()),
            human_time(info.started_at),
            human_time(info.last_seen),
            "yes" if info.alive else "no",
        )
        for info in found
    ]


@click.group(short_help="List the worlds sharing the database; find dead ones.")
def worlds() -> None:
    """List the worlds sharing the database; find and invalidate dead ones."""


@worlds.command("list")
@common_options
def list_worlds(db_url: str, as_json: bool) -> None:
    """List the worlds registered in the database, oldest first.

    A world is alive while its last heartbeat is younger than its validity timeout (30 s by
    default).
    """
    with client_world(db_url) as world:
        found = world.worlds()
    if as_json:
        echo_json([world_data(info) for info in found])
    elif not found:
        click.echo("no worlds registered")
    else:
        click.echo(table(HEADERS, _rows(found)))


@worlds.command("check")
@click.option(
    "--invalidate",
    is_flag=True,
    help="Invalidate the dead worlds found: their plans are recovered by executor worlds.",
)
@common_options
@click.pass_context
def check(ctx: click.Context, invalidate: bool, db_url: str, as_json: bool) -> None:
    """List the dead worlds: those without a heartbeat for their validity timeout.

    With --invalidate, do to each what its death should have: remove its record and its
    inboxes; the executor worlds then recover the plans it was running.

    Exit status: 0 if no dead world was found, or all were invalidated; 1 if dead worlds
    were found and left (run it again with --invalidate); 2 on a usage error.
    """
    invalidated: list[str] = []
    with client_world(db_url) as world:
        dead = [info for info in world.worlds() if not info.alive]
        if invalidate:
            for info in dead:
                world.invalidate(info.id)  # False: another world invalidated it meanwhile
                invalidated.append(info.id)
    if as_json:
        echo_json({"dead": [world_data(info) for info in dead], "invalidated": invalidated})
    elif not dead:
        click.echo("no dead worlds")
    else:
        click.echo(table(HEADERS, _rows(dead)))
        if invalidated:
            click.echo(f"invalidated {len(invalidated)} dead world(s)")
        else:
            click.echo(
                f"{len(dead)} dead world(s): `pydynflow worlds check --invalidate` "
                "invalidates them",
                err=True,
            )
    if dead and not invalidate:
        ctx.exit(1)
