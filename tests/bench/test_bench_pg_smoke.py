"""Smoke tests of the PostgreSQL benchmarks at CI size: bench/bench_pg_w1.py,
bench/bench_pg_drivers.py (psycopg2's ways: psycopg 3 is not a dependency) and
``bench/bench_peers.py --db postgres`` (pydynflow alone: the peers' virtualenv stays out of CI).

Each needs a server on which the test's user may create databases (PYDYNFLOW_TEST_POSTGRES);
every database a run creates must be gone after it. The run's databases carry a tag of the
test's own (PYDYNFLOW_BENCH_DB_TAG), so other work on the same server (another suite, a bench
run by hand) does not change what is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.bench.run import ROOT

# One after the other on one pytest worker (`make test` runs `--dist loadgroup`): they load
# the same two cores and the same server.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("server-databases")]


def databases(admin: Any, tag: str) -> set[str]:
    """The server's databases whose name carries ``tag``."""
    with admin.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE strpos(datname, %s) > 0", (tag,))
        return {row[0] for row in cursor.fetchall()}


def run(
    script: str, server: str, tmp_path: Path, *args: str, tag: str
) -> tuple[dict[str, Any], str]:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--sizes", "small"]
        + ["--postgres", server, "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYDYNFLOW_BENCH_DB_TAG": tag},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stdout


@pytest.mark.timeout(300)
def test_pg_w1_reports_w1_next_to_the_floor(
    _postgres_admin: tuple[str, Any], tmp_path: Path
) -> None:
    server, admin = _postgres_admin
    tag = f"t{uuid.uuid4().hex[:7]}_"
    report, stdout = run("bench_pg_w1.py", server, tmp_path, "--repeat", "1", tag=tag)
    assert report["ok"] is True and report["server"]["synchronous_commit"] == "on"
    results = report["results"]
    assert set(results) == {"floor-single", "floor-batched", "W1", "W1-pool32"}
    assert results["floor-single"]["ratio"] == pytest.approx(1.0)
    for name in ("W1", "W1-pool32"):
        w1 = results[name]
        assert w1["rate"] > 0 and w1["ratio"] == pytest.approx(
            w1["rate"] / results["floor-single"]["rate"]
        )
        assert w1["extra"]["commits"] >= 1
    assert "W1: " in stdout and "x floor-single" in stdout
    assert databases(admin, tag) == set()  # every fresh database was dropped


@pytest.mark.timeout(300)
def test_peers_on_postgres_run_each_workload_on_a_fresh_database(
    _postgres_admin: tuple[str, Any], tmp_path: Path
) -> None:
    server, admin = _postgres_admin
    tag = f"t{uuid.uuid4().hex[:7]}_"
    report, stdout = run(
        "bench_peers.py",
        server,
        tmp_path,
        *("--db", "postgres", "--engines", "pydynflow,taskflow", "--dir", str(tmp_path)),
        tag=tag,
    )
    assert report["ok"] is True and report["db"] == "postgres"
    assert report["machine"]["postgres"]["synchronous_commit"] == "on"
    floor = report["floors"]["median_commits_per_s"]["postgres"]
    assert floor > 0 and set(report["floors"]["median_commits_per_s"]) == {"postgres"}
    measured = [row for row in report["rows"] if row["engine"] == "pydynflow"]
    assert {row["workload"] for row in measured} == {"W1", "W2", "W3", "W4", "W4-10k"}
    for row in measured:
        assert row["status"] == "measured" and row["steps_per_s"] > 0, row
        assert row["durability"]["synchronous_commit"] == "on"
    # taskflow is not run on PostgreSQL, and says why
    taskflow = [row for row in report["rows"] if row["engine"] == "taskflow"]
    assert taskflow and all(row["status"] == "not run" for row in taskflow)
    assert "taskflow" in report["not_run"] and "taskflow: not run on PostgreSQL" in stdout
    fastest = min((row for row in measured if row["workload"] == "W1"), key=lambda r: r["wall_s"])
    assert report["claims"][0]["measured"] == pytest.approx(fastest["steps_per_s"] / floor)
    assert databases(admin, tag) == set()


@pytest.mark.timeout(300)
def test_pg_drivers_replays_w1s_transactions_each_way(
    _postgres_admin: tuple[str, Any], tmp_path: Path
) -> None:
    server, admin = _postgres_admin
    tag = f"t{uuid.uuid4().hex[:7]}_"
    report, stdout = run(
        "bench_pg_drivers.py",
        server,
        tmp_path,
        *("--repeat", "1", "--psycopg3-python", str(tmp_path / "no-python")),
        tag=tag,
    )
    assert report["transactions"] >= 10 and report["floor_ms"] > 0
    assert set(report["ways"]) == {"psycopg2-before", "psycopg2-values", "psycopg2-json"}
    for way in report["ways"].values():
        assert way["wall_ms"] > 0 and way["server_cpu_ms"] >= 0
        assert way["x_floor"] == pytest.approx(way["wall_ms"] / report["floor_ms"])
    assert "psycopg 3 not measured" in stdout
    assert databases(admin, tag) == set()
