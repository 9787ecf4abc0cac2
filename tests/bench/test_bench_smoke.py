"""Smoke test of bench/bench_workloads.py: the CI-sized run succeeds and reports every workload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.bench.run import run_bench

# W1-pinned needs Linux and two CPUs (the bench leaves it out elsewhere).
PINNED = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
WORKLOADS = [
    "floor-single",
    "floor-batched",
    "W1",
    "W1-serial",
    "W1-pool32",
    *(["W1-pinned"] if PINNED else []),
    "W2",
    "W3",
]


@pytest.mark.timeout(60)
def test_small_run_reports_every_workload(tmp_path: Path) -> None:
    run = run_bench("bench_workloads.py", tmp_path, "--repeat", "1")
    report, out = run.report, run.out
    assert report["ok"] is True and report["error"] is None
    assert report["sizes"] == "small" and report["repeat"] == 1
    assert report["machine"]["nproc"] >= 1 and report["machine"]["sqlite"]
    results = report["results"]
    assert list(results) == WORKLOADS
    for name in WORKLOADS:
        result = results[name]
        for key in ("wall_s", "rate", "ratio", "rss_mb"):
            assert result[key] > 0, (name, key, result[key])
        assert result["threads"] >= 1
        assert len(result["runs"]) == 1
    assert results["floor-single"]["ratio"] == 1.0
    assert results["W3"]["extra"]["pool_size"] == report["size"]["w3_pool"]
    assert "workload" in run.stdout and "W3" in run.stdout  # the table was printed
    leftovers = [p for p in tmp_path.iterdir() if p != out]
    assert leftovers == [], leftovers  # the databases are removed unless --keep
