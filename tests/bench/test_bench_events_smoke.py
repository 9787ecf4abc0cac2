"""Smoke test of bench/bench_events.py: the CI-sized run succeeds and reports every figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.run import run_bench


@pytest.mark.timeout(60)
def test_small_run_reports_the_burst_next_to_w1_and_the_single_event(tmp_path: Path) -> None:
    run = run_bench("bench_events.py", tmp_path, "--repeat", "1")
    report = run.report
    assert report["ok"] is True and report["error"] is None, report["error"]
    assert report["sizes"] == "small" and report["repeat"] == 1
    assert set(report["medians"]) == {"floor", "W1", "E1-async", "E1-callback"}
    assert all(rate > 0 for rate in report["medians"].values()), report["medians"]
    bursts = [r for r in report["runs"] if r["what"].startswith("E1-")]
    assert [r["events"] for r in bursts] == [50, 50]  # 10 plans x 5 waiting steps, each style
    single = report["single"]
    assert single["n"] == 20 and 0 < single["p50_ms"] <= single["p99_ms"]
    claims = [c["claim"] for c in report["checks"]]
    assert claims == [
        "E1-async events/s >= W1 steps/s (same run)",
        "E1-callback events/s >= W1 steps/s (same run)",
        "single event p50 <= 1 ms (DESIGN.md, information)",
    ]
