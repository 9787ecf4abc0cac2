"""What the commands share: the ``--db``, ``--json`` and ``--by`` options, the client world,
and which errors mean that an operation failed (exit status 1) rather than a bug."""

from __future__ import annotations

import contextlib
import getpass
import inspect
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from pydynflow.errors import DynflowError
from pydynflow.world import DEFAULT_DB, World

__all__ = [
    "db_option",
    "FAILURES",
    "by_option",
    "client_world",
    "common_options",
    "failure_message",
    "os_user",
    "supported",
]

F = TypeVar("F", bound=Callable[..., Any])

FAILURES: tuple[type[BaseException], ...] = (DynflowError, TimeoutError)
"""Errors that mean the operation failed (exit status 1, the message on stderr)."""


def failure_message(error: BaseException) -> str:
    """Return what to tell the user about a failed operation."""
    return str(error) or type(error).__name__


def db_option(command: F) -> F:
    """Add ``--db URL`` (or ``PYDYNFLOW_DB``) to a command, as its ``db_url`` argument."""
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        envvar="PYDYNFLOW_DB",
        default=DEFAULT_DB,
        show_default=True,
        show_envvar=True,
        help="Database: sqlite:///path.db or postgresql://user@host/db.",
    )(command)


def common_options(command: F) -> F:
    """Add ``--db URL`` (or ``PYDYNFLOW_DB``) and ``--json`` to a command."""
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )
    return db_option(command)


def os_user() -> str:
    """Return the operating-system user running this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def by_option(command: F) -> F:
    """Add ``--by NAME`` (who asks, for the plan's history) to an operator command."""
    return click.option(
        "--by",
        metavar="NAME",
        default=os_user,
        show_default="the OS user",
        help="Who asks, recorded in the plan's history.",
    )(command)


@contextlib.contextmanager
def client_world(db: str, *, start: bool = False) -> Iterator[World]:
    """Open a client world on ``db`` (an existing database only) and stop it afterwards.

    ``start`` it for operator calls, which reach the executor world owning a plan through
    the database; reads need no start (and leave no trace in the database's world list).

    Raises:
        click.BadParameter: ``db`` is not a database URL pydynflow accepts.
    """
    try:
        world = World(
            db,
            executor=False,
            plugins=False,  # reads and operator calls run no action code
            name=f"pydynflow-cli-{socket.gethostname()}-{os.getpid()}",
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--db'") from exc
    try:
        if start:
            world.start()
        yield world
    finally:
        world.stop()


def supported(method: Callable[..., Any], **options: Any) -> dict[str, Any]:
    """Return the ``options`` that ``method`` takes as keyword arguments.

    The World API gains operator options (who asked, event ids); the commands pass them
    wherever the installed World takes them.
    """
    parameters = inspect.signature(method).parameters
    return {name: value for name, value in options.items() if name in parameters}
