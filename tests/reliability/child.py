"""A child process for the crash tests: its stdout lines arrive on a queue, read by a thread.

The tests synchronise on the markers the child prints, never on sleeps, then kill it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


class Child:
    """``python -m <module> <mode> <db path>`` with its stdout lines on a queue."""

    def __init__(
        self, module: str, mode: str, db_path: Path, stderr_path: Path, env: dict[str, str]
    ) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, mode, str(db_path)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, wanted: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """Return the first line for which ``wanted`` holds; fail if the child ends first."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no wanted line from the child in {timeout}s; saw {self.seen[-5:]}")
            if line is None:
                self.proc.wait(TIMEOUT)
                pytest.fail(
                    f"the child ended (rc={self.proc.returncode}) before the wanted line; "
                    f"saw {self.seen[-5:]}; stderr: {self.stderr_tail()}"
                )
            self.seen.append(line)
            if wanted(line):
                return line

    def sigkill(self) -> None:
        """Kill the child with SIGKILL and reap it."""
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(TIMEOUT) == -signal.SIGKILL

    def stderr_tail(self) -> str:
        """Return the end of what the child wrote to stderr."""
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        """Kill the child if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@contextmanager
def running_child(module: str, mode: str, tmp_path: Path, **env: str) -> Iterator[Child]:
    """Run ``module`` in ``mode`` on ``tmp_path/pydynflow.db``; kill it on the way out."""
    started = Child(module, mode, tmp_path / "pydynflow.db", tmp_path / f"{mode}.stderr", env)
    try:
        yield started
    finally:
        started.close()
