"""Run a bench script at CI size in a subprocess and return its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BenchRun:
    """A finished bench run: its JSON report, what it printed, where the report is."""

    report: dict[str, Any]
    stdout: str
    out: Path


def run_bench(script: str, tmp_path: Path, *args: str) -> BenchRun:
    """Run ``bench/<script> --sizes small <args> --json … --dir …``; assert it exits 0."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / script),
            "--sizes",
            "small",
            *args,
            "--json",
            str(out),
            "--dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return BenchRun(json.loads(out.read_text()), done.stdout, out)
