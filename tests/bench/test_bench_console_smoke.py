"""The console benchmark runs at a tiny size (it is not in CI otherwise: a change of the
API it uses must not go unnoticed until someone runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.run import ROOT


def test_bench_console_runs_on_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_console.py"),
            "--plans",
            "300",
            "--db",
            "sqlite",
            "--repeat",
            "1",
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
    assert report["ok"] and set(report["sqlite"]["indexed_ms"]) == set(
        report["sqlite"]["baseline_ms"]
    )
