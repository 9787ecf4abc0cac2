"""Smoke test of bench/bench_middleware.py: a CI-sized run succeeds and reports the ratio."""

from __future__ import annotations

from pathlib import Path

from tests.bench.run import run_bench


def test_small_run_reports_w1_with_and_without_middleware(tmp_path: Path) -> None:
    run = run_bench("bench_middleware.py", tmp_path, "--repeat", "1")
    report = run.report
    assert report["ok"] is True and report["error"] is None
    assert report["middleware"] == ["M1", "M2", "M3"]
    medians = report["median_steps_per_s"]
    assert medians["W1"] > 0 and medians["W1-middleware"] > 0
    assert report["ratio"] == medians["W1-middleware"] / medians["W1"]
    assert "W1 with 3 middlewares / without:" in run.stdout
