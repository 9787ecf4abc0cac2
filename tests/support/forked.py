"""Service processes of the integration tests, forked by `tests.support.fork_server`.

`spawn` returns a `Forked`, a handle with what the tests use of `subprocess.Popen`: ``pid``,
``stdout`` (a pipe), ``stderr`` (a pipe or None), ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``,
``returncode``. The process is a child of the fork server (started on first use, one per
test process), which imported the package once: a service starts without Python's start and
the package import, and is otherwise the process ``python -m MODULE ARGS...`` would be.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


class ForkServer:
    """The client of one `tests.support.fork_server` process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._exited: dict[int, int] = {}
        self._lock = threading.Lock()

    def spawn(
        self,
        module: str,
        args: list[str],
        stderr: IO[Any] | None,
        env: dict[str, str],
        cwd: Path,
        session: bool = False,
    ) -> Forked:
        """Start ``python -m MODULE ARGS...`` in ``cwd`` with the environment ``env``; its
        stdin is /dev/null, its stdout a pipe, its stderr goes to the open file ``stderr``
        (None: a pipe too). ``session``: in a session (and process group) of its own."""
        read, write = os.pipe()
        err_read, err_write = os.pipe() if stderr is None else (None, stderr.fileno())
        request = {
            "module": module,
            "args": args,
            "env": env,
            "cwd": str(cwd),
            "session": session,
        }
        with self._lock:
            server = self._started()
            try:
                socket.send_fds(server, [json.dumps(request).encode()], [write, err_write])
            finally:
                os.close(write)
                if err_read is not None:
                    os.close(err_write)
            while True:
                reply = self._receive(timeout=None)
                assert reply is not None
                if "started" in reply:
                    break
        return Forked(
            self,
            reply["started"],
            open(read, encoding="utf-8"),  # noqa: SIM115
            None if err_read is None else open(err_read, encoding="utf-8"),  # noqa: SIM115
        )

    def returncode(self, pid: int, timeout: float | None) -> int | None:
        """Return ``pid``'s exit status, waiting up to ``timeout`` s (None: no limit) for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._exited:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._receive(left) is None:
                    return None
            return self._exited[pid]

    def _receive(self, timeout: float | None) -> dict[str, int] | None:
        """Read the server's next message (None after ``timeout`` s); note exits."""
        assert self._socket is not None
        ready, _, _ = select.select([self._socket], [], [], timeout)
        if not ready:
            return None
        message = self._socket.recv(1 << 16)
        if not message:
            raise RuntimeError("the fork server exited")
        reply: dict[str, int] = json.loads(message)
        if "status" in reply:
            self._exited[reply["pid"]] = reply["status"]
        return reply

    def _started(self) -> socket.socket:
        if self._socket is None:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.fork_server", str(theirs.fileno())],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            theirs.close()
            self._socket = mine
        return self._socket

    def close(self) -> None:
        """Stop the server: the services still running are killed."""
        if self._socket is not None and self._proc is not None:
            self._socket.close()
            self._proc.wait(30)
            self._socket = self._proc = None


class Forked:
    """A service process started by a `ForkServer` (what the tests use of `subprocess.Popen`)."""

    def __init__(
        self, server: ForkServer, pid: int, stdout: IO[str], stderr: IO[str] | None
    ) -> None:
        self._server = server
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.returncode(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.returncode(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"python -m ... (pid {self.pid})", timeout or 0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


SERVER = ForkServer()
atexit.register(SERVER.close)


def spawn(
    module: str,
    *args: str,
    stderr: IO[Any] | None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    session: bool = False,
) -> Forked:
    """Start ``python -m MODULE ARGS...`` (see `ForkServer.spawn`) in this test process's
    fork server, with this process's environment and ``env``."""
    environment = {**os.environ, **(env or {})}
    return SERVER.spawn(module, list(args), stderr, environment, cwd, session)
