"""``pydynflow plans delete``, run as a process against real databases."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import SQLITE_ONLY, Cli, Plans


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _listed(cli: Cli, url: str) -> set[str]:
    return {plan["id"] for plan in json.loads(_ok(cli("plans", "list", "--db", url, "--json")))}


def test_delete_removes_stopped_plans_and_keeps_paused_and_running_ones(
    cli: Cli, url: str, plans: Plans
) -> None:
    assert _ok(cli("plans", "delete", "--db", url)) == "deleted 1 execution plan(s)\n"
    assert _listed(cli, url) == {plans.failed.id, plans.waiting.id}
    assert _ok(cli("plans", "delete", "--db", url)) == "deleted 0 execution plan(s)\n"


def test_delete_with_paused_plans_and_a_backup(
    cli: Cli, url: str, plans: Plans, tmp_path: Path
) -> None:
    backup = tmp_path / "deleted.jsonl"
    out = _ok(
        cli("plans", "delete", "--db", url, "--include-paused", "--backup", str(backup), "--json")
    )
    assert json.loads(out) == {"deleted": 2, "dry_run": False, "backup": str(backup)}
    records = [json.loads(line) for line in backup.read_text().splitlines()]
    assert {record["plan"]["id"] for record in records} == {plans.succeeded.id, plans.failed.id}
    assert _listed(cli, url) == {plans.waiting.id}  # running: never deleted


def test_delete_filters_and_dry_run(cli: Cli, url: str, plans: Plans) -> None:
    def deleted(*options: str) -> int:
        out = _ok(cli("plans", "delete", "--db", url, "--json", *options))
        return int(json.loads(out)["deleted"])

    assert deleted("--dry-run", "--include-paused") == 2
    assert deleted("--older-than", "1d") == 0  # they stopped moments ago
    assert deleted("--result", "error") == 0  # the failed plan is paused, not stopped
    assert deleted("--state", "paused", "--include-paused", "--result", "error") == 1
    assert _listed(cli, url) == {plans.succeeded.id, plans.waiting.id}
    done = cli("plans", "delete", "--db", url, "--dry-run", "--older-than", "0s")
    assert _ok(done) == "would delete 1 execution plan(s)\n"
    assert deleted("--state", "stopped", "--result", "success", "--older-than", "0s") == 1
    assert _listed(cli, url) == {plans.waiting.id}


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--state", "paused"], "--state paused needs --include-paused"),
        (["--state", "running", "--include-paused"], "are never deleted"),
        (["--older-than", "5x"], "'5x' is not a duration such as 30d"),
        (["--older-than", "d"], "is not a duration"),
        (["--dry-run", "--backup", "b.jsonl"], "--backup and --dry-run do not go together"),
        (["--state", "done"], "'done' is not one of"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_delete_usage_errors_exit_2(
    cli: Cli, url: str, plans: Plans, options: list[str], message: str
) -> None:
    done = cli("plans", "delete", "--db", url, *options)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(_listed(cli, url)) == 3  # nothing deleted


@SQLITE_ONLY
def test_delete_help_names_every_option(cli: Cli, url: str) -> None:
    out = _ok(cli("plans", "delete", "--help"))
    for option in (
        "--state",
        "--result",
        "--label",
        "--older-than",
        "--backup",
        "--include-paused",
        "--batch-size",
        "--dry-run",
        "--json",
        "--db",
    ):
        assert option in out
