"""One executor process of ``pydynflow worker``: ``python -m pydynflow.daemon.child FD``.

FD is this process's end of a socket pair whose other end the supervisor holds. The
supervisor sends one JSON line, ``{"index": i, "config": {...}}`` (a `WorkerConfig`); the
child answers with JSON lines: ``{"world_id": ...}`` as soon as its world exists (before it
starts, so that the supervisor can invalidate it whatever happens next), then, if the world
stopped on its own because its database could not be written, ``{"fatal": why}``, or, if
it could not start, ``{"error": why}``. Its exit status is `World.run_forever`'s. If the
supervisor's end closes (the supervisor died), the child stops gracefully, as on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from typing import IO, Any

from pydynflow.adapters import telemetry
from pydynflow.daemon.config import WorkerConfig, import_apps
from pydynflow.world import World

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run child ``index``'s executor world until SIGTERM; return its exit status.

    Args:
        argv: the socket's file descriptor (default: ``sys.argv[1:]``).
    """
    args = sys.argv[1:] if argv is None else argv
    channel = socket.socket(fileno=int(args[0]))
    reader = channel.makefile("rb")
    line = reader.readline()
    if not line:  # the supervisor is gone already
        return 1
    order = json.loads(line)
    config = WorkerConfig.from_data(order["config"])

    def report(**data: Any) -> None:
        channel.sendall(json.dumps(data).encode() + b"\n")

    try:
        import_apps(config.apps)
        world = World(
            config.db,
            executor=True,
            pool_size=config.pool_size,
            queues=config.queues,
            name=config.world_name(int(order["index"])),
            fatal_persistence_timeout=config.fatal_persistence_timeout,
        )
    except Exception as exc:
        report(error=f"{type(exc).__name__}: {exc}")
        raise
    report(world_id=world.id)
    telemetry.current().watch(world)  # its queues, when the daemon records metrics
    threading.Thread(
        target=_stop_when_orphaned, args=(reader,), name="pydynflow-supervisor-watch", daemon=True
    ).start()
    try:
        status = world.run_forever(stop_timeout=config.stop_timeout)
    except Exception as exc:  # the world could not start
        report(error=f"{type(exc).__name__}: {exc}")
        raise
    if world.fatal_error is not None:
        report(fatal=f"{type(world.fatal_error).__name__}: {world.fatal_error}")
    return status


def _stop_when_orphaned(reader: IO[bytes]) -> None:
    """Wait for the supervisor's end of the socket to close, then stop as on SIGTERM."""
    with contextlib.suppress(OSError):
        reader.read()
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
