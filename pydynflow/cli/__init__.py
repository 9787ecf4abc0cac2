"""The ``pydynflow`` command line (click): one root group, one module per command group.

Each group lives in its own module (``db.py``, ``plans.py``) and is imported only when it
is invoked, so a group with heavy or optional dependencies costs the others nothing. Adding
one is one line in `COMMANDS`. Nothing else in the package imports this one.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from pydynflow.cli._common import FAILURES, failure_message

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS: dict[str, str] = {
    "db": "pydynflow.cli.db:db",
    "plans": "pydynflow.cli.plans:plans",
    "web": "pydynflow.cli.web:web",
    "worker": "pydynflow.cli.worker:worker",
    "worlds": "pydynflow.cli.worlds:worlds",
}
"""The top-level commands: name -> ``"module:attribute"`` of their click command."""


class _LazyGroup(click.Group):
    """A group whose commands are imported from `COMMANDS` when first used.

    Operation failures (`FAILURES`) of any command become click errors here: a message on
    stderr and exit status 1, never a traceback.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the names of every command, imported or not."""
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command ``cmd_name``, importing its module the first time."""
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command line, turning an operation failure into exit status 1."""
        try:
            return super().invoke(ctx)
        except FAILURES as exc:
            raise click.ClickException(failure_message(exc)) from exc


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pydynflow", prog_name="pydynflow")
def cli() -> None:
    """Operate pydynflow: its database schema, its execution plans, its worlds and daemon.

    Every command takes --db URL (or PYDYNFLOW_DB), and all but worker and web take --json. Exit
    status: 0 on success, 1 when the operation failed (unknown plan, rejected event...),
    2 on a usage error.
    """


def main() -> None:
    """Run the ``pydynflow`` command line (the console script's entry point)."""
    cli(prog_name="pydynflow")
