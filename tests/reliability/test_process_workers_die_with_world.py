"""SIGKILL of a ``World(executor="processes")``: its worker processes die with it, at once.

A worker left running its step after its world is gone would run it a second time, in
parallel, with the world restarted on the same database. The child is a real process
(`process_world`); the test synchronises only on the line its step prints.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.child import running_child

GONE_WITHIN = 2.0  # seconds the worker and the fork server may outlive their world

pytestmark = pytest.mark.slow


def parent_of(pid: int) -> int:
    """Return the parent pid of the live process ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def outliving(watches: dict[str, int], timeout: float) -> list[str]:
    """Return the names of the processes (pidfds) still running ``timeout`` seconds on."""
    deadline = time.monotonic() + timeout
    return [
        name
        for name, fd in watches.items()
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]
    ]


def test_a_killed_world_takes_its_busy_worker_and_fork_server_along(tmp_path: Path) -> None:
    with running_child("tests.reliability.process_world", "hang", tmp_path) as world:
        line = world.read_until(lambda line: line.startswith("worker "))
        worker, fork_server = (int(pid) for pid in line.split()[1:])
        assert worker != world.proc.pid and parent_of(fork_server) == world.proc.pid
        watches = {"worker": os.pidfd_open(worker), "fork server": os.pidfd_open(fork_server)}
        try:
            world.sigkill()
            assert not outliving(watches, GONE_WITHIN), "outlived the killed world"
        finally:
            for fd in watches.values():
                with contextlib.suppress(ProcessLookupError):  # already gone, as expected
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                os.close(fd)
