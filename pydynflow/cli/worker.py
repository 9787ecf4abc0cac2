"""``pydynflow worker``: run executor worlds as supervised processes (the daemon)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from pydynflow.adapters import telemetry
from pydynflow.cli._common import db_option
from pydynflow.daemon import AppImportError, Supervisor, WorkerConfig, import_apps

__all__ = ["prepare_metrics_dir", "worker"]


def prepare_metrics_dir(path: Path) -> None:
    """Empty (or create) ``path`` and record this process's and its children's metrics
    there, in prometheus-client's multiprocess mode (files of earlier runs would be added
    to this run's, so they go)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[telemetry.MULTIPROC_ENV] = str(path.resolve())
    telemetry.use_prometheus()


def _queues(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    """Parse ``--queue NAME=N`` options into ``{NAME: N}``."""
    queues: dict[str, int] = {}
    for value in values:
        name, equals, size = value.partition("=")
        name = name.strip()
        if not equals or not name:
            raise click.BadParameter(f"{value!r} is not NAME=N", ctx=ctx, param=param)
        if name == "default":
            raise click.BadParameter(
                "the default queue's size is --pool-size", ctx=ctx, param=param
            )
        try:
            queues[name] = int(size)
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: N must be an integer", ctx=ctx, param=param
            ) from None
        if queues[name] < 1:
            raise click.BadParameter(f"{value!r}: N must be at least 1", ctx=ctx, param=param)
    return queues


@click.command(short_help="Run executor worlds as a supervised daemon.")
@db_option
@click.option(
    "--app",
    "apps",
    metavar="MODULE",
    multiple=True,
    required=True,
    help="A module whose Action classes the workers run, imported first (repeat for several).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Executor worlds to run, one process each.",
)
@click.option(
    "--pool-size",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Worker threads of each world's default queue.",
)
@click.option(
    "--queue",
    "queues",
    metavar="NAME=N",
    multiple=True,
    callback=_queues,
    help="An extra queue and its worker threads in each world (repeat for several).",
)
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="the host name",
    help="The daemon's name: its worlds are NAME-0, NAME-1... and NAME-supervisor.",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running steps get to finish on SIGTERM.",
)
@click.option(
    "--fatal-persistence-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a world rides out a database it cannot write before the daemon exits 1.",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Record Prometheus metrics in this directory (emptied at start; prometheus-client's "
    "multiprocess mode): `pydynflow web --metrics-dir` on this host serves them.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    db_url: str,
    apps: tuple[str, ...],
    processes: int,
    pool_size: int,
    queues: dict[str, int],
    name: str,
    stop_timeout: float,
    fatal_persistence_timeout: float,
    metrics_dir: Path | None,
) -> None:
    """Run executor worlds as supervised processes, until SIGTERM or SIGINT.

    Imports the --app modules, then starts --processes executor worlds, each in a child
    process, and logs JSON lines on stdout. A child that dies is restarted (after 0.1 s,
    doubling up to 30 s while children keep dying young) and its world is invalidated at
    once, so its plans are recovered now. SIGTERM stops every world gracefully (running
    steps get --stop-timeout seconds); a second SIGTERM stops them at once.

    Exit status: 0 after SIGTERM or SIGINT; 1 if a world's database could not be written
    for --fatal-persistence-timeout seconds (or could not be opened); 2 on a usage error,
    such as an --app module that cannot be imported.
    """
    if metrics_dir is not None:
        prepare_metrics_dir(metrics_dir)
    try:
        import_apps(apps)
    except AppImportError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--app'") from exc
    config = WorkerConfig(
        db=db_url,
        apps=apps,
        pool_size=pool_size,
        queues=queues,
        name=name,
        stop_timeout=stop_timeout,
        fatal_persistence_timeout=fatal_persistence_timeout,
    )
    try:
        status = Supervisor(config, processes).run()
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--db'") from exc
    ctx.exit(status)
