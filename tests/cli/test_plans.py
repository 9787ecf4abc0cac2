"""``pydynflow plans list`` and ``plans show``, run as processes against real databases."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.cli.conftest import SQLITE_ONLY, Cli, Plans

ISO_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
FAILS = "tests.cli.actions.Fails"


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ids(cli: Cli, url: str, *options: str) -> list[str]:
    found = json.loads(_ok(cli("plans", "list", "--db", url, "--json", *options)))
    return [plan["id"] for plan in found]


def test_list_prints_every_plan_newest_first_in_aligned_columns(
    cli: Cli, url: str, plans: Plans
) -> None:
    lines = _ok(cli("plans", "list", "--db", url)).splitlines()
    assert lines[0].split() == ["ID", "STATE", "RESULT", "STARTED", "ENDED", "LABEL"]
    rows = [line.split(maxsplit=5) for line in lines[1:]]
    assert [row[:3] for row in rows] == [
        [plans.waiting.id, "running", "pending"],
        [plans.failed.id, "paused", "error"],
        [plans.succeeded.id, "stopped", "success"],
    ]
    assert all(ISO_SECOND.match(row[3]) for row in rows)
    assert [row[4] for row in rows[:2]] == ["-", "-"] and ISO_SECOND.match(rows[2][4])
    assert [row[5] for row in rows] == [
        "tests.cli.actions.Waits",
        FAILS,
        "cli-test succeeds",  # a label with a blank stays one cell
    ]
    starts = [lines[0].index(name) for name in ("STATE", "RESULT", "STARTED", "ENDED", "LABEL")]
    for line in lines[1:]:  # every cell starts where its header does
        assert all(line[start - 1] == " " and line[start] != " " for start in starts), line


def test_list_filters_by_state_result_and_label_and_limits(
    cli: Cli, url: str, plans: Plans
) -> None:
    assert _ids(cli, url, "--state", "paused") == [plans.failed.id]
    assert _ids(cli, url, "--state", "running", "--state", "paused") == [
        plans.waiting.id,
        plans.failed.id,
    ]
    assert _ids(cli, url, "--result", "success") == [plans.succeeded.id]
    assert _ids(cli, url, "--label", FAILS) == [plans.failed.id]
    assert _ids(cli, url, "--limit", "1") == [plans.waiting.id]
    assert _ids(cli, url, "--state", "stopped", "--result", "error") == []
    done = cli("plans", "list", "--db", url, "--state", "stopped", "--result", "error")
    assert _ok(done).strip() == "no execution plans match"


@SQLITE_ONLY
def test_list_json_has_states_results_and_utc_times(cli: Cli, url: str, plans: Plans) -> None:
    (found,) = json.loads(_ok(cli("plans", "list", "--db", url, "--json", "--result", "success")))
    assert found["id"] == plans.succeeded.id
    assert (found["state"], found["result"], found["label"]) == (
        "stopped",
        "success",
        "cli-test succeeds",
    )
    assert found["started_at"].endswith("+00:00") and found["ended_at"].endswith("+00:00")
    assert found["real_time"] >= 0


@SQLITE_ONLY
def test_the_database_can_come_from_the_environment(cli: Cli, url: str, plans: Plans) -> None:
    done = cli("plans", "list", "--json", "--state", "paused", env={"PYDYNFLOW_DB": url})
    assert [plan["id"] for plan in json.loads(_ok(done))] == [plans.failed.id]


def test_show_prints_steps_errors_and_history(cli: Cli, url: str, plans: Plans) -> None:
    plan_id = plans.failed.id
    text = _ok(cli("plans", "show", plan_id, "--db", url))
    summary, steps, errors, history = text.split("\n\n")
    fields = dict(line.split(maxsplit=1) for line in summary.replace(" time", "_time").splitlines())
    assert (fields["id"], fields["state"], fields["result"]) == (plan_id, "paused", "error")
    assert ISO_SECOND.match(fields["started"]) and fields["ended"] == "-"
    rows = [line.split() for line in steps.splitlines()]
    assert rows[0] == ["STEP", "PHASE", "STATE", "ATTEMPTS", "STARTED", "ENDED", "ACTION"]
    assert [(row[0], row[1], row[2], row[3], row[6]) for row in rows[1:]] == [
        ("1", "plan", "success", "0", FAILS),
        ("2", "run", "error", "1", FAILS),
    ]
    assert all(ISO_SECOND.match(cell) for row in rows[1:] for cell in row[4:6])
    assert errors.splitlines() == ["ERRORS", "step 2: RuntimeError: disk full"]
    entries = [line.split(maxsplit=3) for line in history.splitlines()]
    assert entries[0] == ["TIME", "HISTORY", "WORLD", "DETAILS"]
    assert [" ".join(entry[1:3]) for entry in entries[1:]] == [
        "start execution",
        "pause execution",
    ]
    assert entries[-1][-1].endswith("reason=error")

    traced = _ok(cli("plans", "show", plan_id, "--db", url, "--backtrace"))
    assert 'raise RuntimeError("disk full")' in traced and "in run" in traced


def test_show_json_has_every_step_with_its_action_data(cli: Cli, url: str, plans: Plans) -> None:
    shown = json.loads(_ok(cli("plans", "show", plans.waiting.id, "--db", url, "--json")))
    assert (shown["state"], shown["result"], shown["progress"]) == ("running", "pending", 0.5)
    plan_step, run_step = shown["steps"]
    assert (plan_step["phase"], plan_step["state"]) == ("plan", "success")
    assert (run_step["phase"], run_step["state"], run_step["attempts"]) == ("run", "suspended", 1)
    assert run_step["action_class"] == "tests.cli.actions.Waits"
    assert set(run_step["input"]) == {"key"} and run_step["error"] is None
    assert run_step["started_at"].endswith("+00:00") and run_step["ended_at"] is None
    assert [entry["name"] for entry in shown["history"]] == ["start execution"]

    failed = json.loads(_ok(cli("plans", "show", plans.failed.id, "--db", url, "--json")))
    error = failed["steps"][1]["error"]
    assert (error["exception_class"], error["message"]) == ("RuntimeError", "disk full")
    assert error["backtrace"] and failed["error"] == error


def test_show_of_an_unknown_plan_fails_with_the_worlds_message(
    cli: Cli, url: str, plans: Plans
) -> None:
    done = cli("plans", "show", "no-such-plan", "--db", url)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "Error: no execution plan with id 'no-such-plan'\n"


def test_reading_a_missing_sqlite_database_fails_and_creates_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "missing" / "pydynflow.db"
    for args in (["plans", "list"], ["plans", "show", "some-plan"]):
        done = cli(*args, "--db", f"sqlite:///{missing}")
        assert done.returncode == 1, done.stderr
        assert f"no database at {missing}" in done.stderr and "Traceback" not in done.stderr
    assert not missing.parent.exists()
