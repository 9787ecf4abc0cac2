"""Smoke test of bench/bench_w4.py: the CI-sized W4 run succeeds and reports both styles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.run import run_bench

STYLES = ["callback", "async"]
POSITIVE = [
    "rss_baseline_mb",
    "rss_waiting_mb",
    "trigger_park_s",
    "event_p50_ms",
    "event_p99_ms",
    "events_per_s",
]


@pytest.mark.timeout(60)
def test_small_run_reports_both_styles(tmp_path: Path) -> None:
    run = run_bench("bench_w4.py", tmp_path)
    report, out = run.report, run.out
    assert report["ok"] is True and report["error"] is None, report["error"]
    assert report["n"] == 200 and report["sizes"] == "small"
    assert report["separate_processes"] is True
    results = report["results"]
    assert list(results) == STYLES
    for style in STYLES:
        result = results[style]
        assert result["style"] == style and result["n"] == 200
        assert result["all_success"] is True and result["error"] is None
        for key in POSITIVE:
            assert result[key] > 0, (style, key, result[key])
        assert result["event_p99_ms"] >= result["event_p50_ms"]
        assert 1 <= result["threads_waiting"] <= result["os_threads_waiting"] + 1
        assert result["kb_per_step"] != 0
        assert result["store"]["plan:stopped/success"] == 201  # N and the warm-up plan
        assert set(report["passed"][style]) == {"threads", "kb_per_step", "all_success"}
        assert report["passed"][style]["all_success"] is True
    assert "events/s" in run.stdout and "PASS" in run.stdout  # the table was printed
    leftovers = [p for p in tmp_path.iterdir() if p != out]
    assert leftovers == [], leftovers  # the databases are removed unless --keep
