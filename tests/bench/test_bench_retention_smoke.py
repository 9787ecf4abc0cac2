"""Smoke test of bench/bench_retention.py: a small run succeeds and its checks pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.run import ROOT


def test_small_retention_run_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_retention.py"),
            "--plans",
            "300",
            "--no-postgres",
            "--backup",
            "--json",
            str(out),
            "--dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["plans"] == 300
    assert [run["backup"] for run in report["runs"]] == [False, True]
    for run in report["runs"]:
        assert run["plans_deleted"] == 300 and run["transactions"] >= 2
        assert run["longest_txn_ms"] > 0 and run["insert_s"] > 0
    assert [path for path in tmp_path.iterdir() if path != out] == []  # cleaned up
