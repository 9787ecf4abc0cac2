"""A process that starts each service process of the integration tests as a fork of itself.

``python -m tests.support.fork_server FD``: it imports the package and the services once,
starts no thread, then serves the client `tests.support.forked.ForkServer` on the
``SOCK_SEQPACKET`` socket ``FD``. A request is one JSON message ``{"module", "args", "env",
"cwd", "session"}`` carrying two file descriptors, the service's stdout and stderr. For each the server
forks a child that takes that environment and directory and runs the module as
``python -m MODULE ARGS...`` would (`runpy`, as ``__main__``), then answers ``{"started":
pid}``. When a child exits it answers ``{"pid": pid, "status": code}`` (`subprocess`'s
returncode: negative for a signal). When the client goes away, the children are killed.

Each service is still a process of its own that the tests signal and kill by its pid: the
fork only skips Python's start and the import of the package.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
from typing import Any

import tests.support.delayed_service
import tests.support.executor_service  # noqa: F401  # imported once here, not in every service


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the fork: become the service's process, run its module, exit with its status."""
    status = 1
    try:
        if request.get("session"):
            os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        for target, fd in ((0, devnull), (1, fds[0]), (2, fds[1])):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [request["module"], *request["args"]]  # runpy sets argv[0] to the file
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exit_:
            code = exit_.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
            status = code if isinstance(code, int) else (0 if code is None else 1)
        threading._shutdown()  # type: ignore[attr-defined]  # as at the interpreter's exit
        atexit._run_exitfuncs()
    except BaseException:  # what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _send(server: socket.socket, message: dict[str, int]) -> None:
    with contextlib.suppress(OSError):  # the client is gone: nobody to tell
        server.send(json.dumps(message).encode())


def main(fd: int) -> None:
    """Serve requests until the client closes its end of the socket."""
    server = socket.socket(fileno=fd)
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_read, False)
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler: the wakeup fd is written
    children: set[int] = set()
    try:
        while True:
            ready, _, _ = select.select([server, wakeup_read], [], [])
            if wakeup_read in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wakeup_read, 512):
                        pass
                while children:
                    pid, wait_status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    children.discard(pid)
                    _send(server, {"pid": pid, "status": os.waitstatus_to_exitcode(wait_status)})
            if server in ready:
                message, fds, _, _ = socket.recv_fds(server, 1 << 20, 2)
                if not message:
                    return  # the client is gone
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for own in (server.fileno(), wakeup_read, wakeup_write):
                        os.close(own)
                    _child(request, fds)
                for received in fds:
                    os.close(received)
                children.add(pid)
                _send(server, {"started": pid})
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]))
