"""The benchmarks without a JSON report still run, at a tiny size (they are not in CI
otherwise: a change of the API they use must not go unnoticed until someone runs them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.run import ROOT


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("bench_planning.py", ["--children", "20", "--plans", "2"]),
        ("bench_storage.py", ["--plans", "20", "--steps", "2"]),
    ],
)
def test_small_bench_script_runs(script: str, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
