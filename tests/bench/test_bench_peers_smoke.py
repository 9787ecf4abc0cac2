"""Smoke test of bench/bench_peers.py: a CI-sized run of pydynflow alone (no peers virtualenv)
succeeds, prints the table and writes its JSON, so that the side-by-side benchmark cannot rot.
The full run with DBOS and taskflow (`make bench-peers`) stays out of CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.run import run_bench

WORKLOADS = ["W1", "W2", "W3", "W4", "W4-10k"]


@pytest.mark.timeout(60)
def test_small_pydynflow_run_reports_every_workload(tmp_path: Path) -> None:
    run = run_bench("bench_peers.py", tmp_path, "--engines", "pydynflow")
    report, out = run.report, run.out
    assert report["ok"] is True and report["errors"] == []
    assert report["sizes"] == "small" and report["repeat"] == 1
    assert report["engines"] == ["pydynflow"] and report["workloads"] == WORKLOADS
    assert report["machine"]["nproc"] >= 1 and report["machine"]["sqlite"]
    for journal in ("wal", "delete"):
        assert report["floors"]["median_commits_per_s"][journal] > 0
    rows = report["rows"]
    assert sorted({row["workload"] for row in rows}) == sorted(WORKLOADS)
    for row in rows:
        assert row["engine"] == "pydynflow" and row["status"] == "measured", row
        for key in ("wall_s", "steps_per_s", "peak_rss_mb"):
            assert row[key] > 0, (row["workload"], row["variant"], key)
        assert row["x_pydynflow"] >= 1.0  # each row against pydynflow's fastest variant
        assert "wal" in row["durability"]["journal_mode_in_file"]
    w4 = [row for row in rows if row["workload"] == "W4"]
    assert {row["variant"] for row in w4} == {"callback", "async"}
    assert all(row["n"] == report["size"]["w4_n"] and row["threads"] >= 1 for row in w4)
    assert report["ratios"] == {}  # no peer ran: only the claim against the floor
    assert [claim["claim"] for claim in report["claims"]] == [
        "pydynflow W1 >= 3x the one-row-commit floor"
    ]
    floor = report["floors"]["median_commits_per_s"]["wal"]
    w1 = min((row for row in rows if row["workload"] == "W1"), key=lambda row: row["wall_s"])
    assert report["claims"][0]["measured"] == pytest.approx(w1["steps_per_s"] / floor)
    assert "| W1 | pydynflow |" in run.stdout and f"results: {out}" in run.stdout
    leftovers = [p for p in tmp_path.iterdir() if p != out]
    assert leftovers == [], leftovers  # the databases are removed unless --keep
