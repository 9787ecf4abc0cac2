"""The command line's shape: usage errors (exit 2, naming what was wrong), the entry points,
and that nothing else in the package imports it. Pure argument checks use click's runner;
nothing here needs a database."""

from __future__ import annotations

import ast
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import pydynflow
from pydynflow.cli import cli
from tests.cli.conftest import Cli

PACKAGE = Path(pydynflow.__file__).parent


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["plans", "list", "--state", "bogus"],
            "Invalid value for '--state': 'bogus' is not one of",
        ),
        (
            ["plans", "list", "--result", "fine"],
            "Invalid value for '--result': 'fine' is not one of",
        ),
        (["plans", "list", "--limit", "0"], "Invalid value for '--limit'"),
        (["plans", "event", "p", "2", "{bad"], "Invalid value for 'PAYLOAD': not valid JSON"),
        (["plans", "event", "p", "2", "NaN"], "Invalid value for 'PAYLOAD': not valid JSON: NaN"),
        (["plans", "event", "p", "two", "{}"], "Invalid value for 'STEP_ID'"),
        (["plans", "skip", "p"], "Missing argument 'STEP_ID'"),
        (["plans", "resume", "p", "--timeout", "5"], "--timeout needs --wait"),
        (["plans", "list", "--db", "mysql://app:s3cret@db/prod"], "Invalid value for '--db'"),
        (["plans", "frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_naming_what_was_wrong(args: list[str], named: str) -> None:
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    assert named in done.output
    assert "s3cret" not in done.output


def test_the_help_lists_the_command_groups() -> None:
    done = CliRunner().invoke(cli, ["--help"])
    assert done.exit_code == 0
    lines = {" ".join(line.split()) for line in done.output.splitlines()}
    assert "db Inspect and migrate the database schema." in lines
    assert "plans List, show and operate execution plans." in lines
    assert "worker Run executor worlds as a supervised daemon." in lines
    assert "worlds List the worlds sharing the database; find dead ones." in lines
    plans = CliRunner().invoke(cli, ["plans", "--help"])
    commands = plans.output.split("Commands:")[1].split()
    assert {"list", "show", "resume", "skip", "cancel", "halt", "event"} <= set(commands)


def test_a_usage_error_exits_2_in_a_real_process_too(cli: Cli) -> None:
    done = cli("plans", "list", "--state", "bogus")
    assert done.returncode == 2 and "'bogus' is not one of" in done.stderr


def test_the_console_script_is_installed_and_runs() -> None:
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "pydynflow"]
    assert entry.value == "pydynflow.cli:main"
    script = Path(sysconfig.get_path("scripts")) / "pydynflow"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pydynflow, version {pydynflow.__version__}"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_else_in_the_package_imports_the_command_line() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "cli") not in p.parents]
    importers = [
        str(path.relative_to(PACKAGE))
        for path in outside
        if any(
            name == "pydynflow.cli" or name.startswith("pydynflow.cli.") for name in _imports(path)
        )
    ]
    assert outside and not importers


def test_the_command_line_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pydynflow.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Usage: pydynflow" in done.stdout, done.stderr
