"""`Supervisor`: the parent process of ``pydynflow worker``, over N executor processes.

Each child (`pydynflow.daemon.child`) runs one executor world. The supervisor waits on one
selector for signals (through the wake-up fd), its children's reports and their deaths. A
child that dies unasked is restarted after a `Backoff` delay, and its world is invalidated
at once through the supervisor's own client world, so that its plans are recovered now
rather than after ``validity_timeout``. SIGTERM or SIGINT: every child gets SIGTERM (a
graceful stop); a second one: SIGINT, a second signal (each stops at once); a third:
SIGKILL. A
child whose world stopped because its database could not be written (`World.fatal_error`)
stops the daemon with status `EXIT_FATAL`: restarting it would only spin.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pydynflow.adapters import telemetry
from pydynflow.daemon.backoff import Backoff
from pydynflow.daemon.config import WorkerConfig
from pydynflow.daemon.log import LOG_LEVEL, daemon_logger
from pydynflow.errors import DynflowError
from pydynflow.storage.database import redact_url
from pydynflow.world import World

__all__ = ["CHILD_MODULE", "EXIT_FATAL", "EXIT_OK", "Supervisor"]

EXIT_OK = 0
"""The daemon's exit status after a stop it was asked for (SIGTERM, SIGINT)."""
EXIT_FATAL = 1
"""Its status when a child's database was gone for good, or its own could not be opened."""
CHILD_MODULE = "pydynflow.daemon.child"
"""The module each child runs (``python -m``)."""
MAX_WAIT = 1.0
"""Seconds the loop waits at most between two looks at its children (a safety net: a
child's death wakes it at once, by SIGCHLD and by its socket's end)."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Child:
    """One slot of the supervisor: the process running world ``index``, and its restarts."""

    def __init__(self, index: int, backoff: Backoff) -> None:
        self.index = index
        self.backoff = backoff
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.buffer = b""
        self.world_id: str | None = None
        self.fatal: str | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None


class Supervisor:
    """Run ``processes`` executor worlds as child processes, until asked to stop.

    Args:
        config: what each child runs.
        processes: how many children (executor worlds) to keep running.
        log: the logger (default: JSON lines on stdout, `pydynflow.daemon.log`).
        backoff: makes each child's restart delays.
    """

    def __init__(
        self,
        config: WorkerConfig,
        processes: int = 1,
        *,
        log: Any = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive int, got {processes!r}")
        self.config = config
        self.processes = processes
        self.log = log if log is not None else daemon_logger(supervisor=config.name)
        self._children = [_Child(index, backoff()) for index in range(processes)]
        self._client: World | None = None
        self._selector: selectors.BaseSelector | None = None
        self._signals: list[int] = []  # appended by the handler, read by the loop
        self._seen = 0  # signals the loop has acted on
        self._stops = 0  # stop requests so far: signals, or a child's fatal error
        self._fatal: str | None = None

    def run(self) -> int:
        """Supervise the children until a stop; return the daemon's exit status.

        Opens the supervisor's client world, starts the children, restarts those that die,
        and on SIGTERM or SIGINT stops them all and waits for them. Call it from the main
        thread: it installs handlers for SIGTERM, SIGINT and SIGCHLD (restored on return).

        Returns:
            `EXIT_OK` after a stop it was asked for; `EXIT_FATAL` if a child's database was
            gone for good or the supervisor could not open it.

        Raises:
            ValueError: ``config.db`` is not a database URL pydynflow accepts.
            RuntimeError: called from another thread than the main one.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "Supervisor.run() installs signal handlers: call it from the main thread"
            )
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous: dict[int, Any] = {}
        previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        try:
            for signum in _STOP_SIGNALS:
                previous[signum] = signal.signal(signum, self._on_signal)
            # A handler of its own makes SIGCHLD write to the wake-up fd: a death wakes the loop.
            previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
            with selectors.DefaultSelector() as selector:
                self._selector = selector
                selector.register(wake_read, selectors.EVENT_READ)
                return self._supervise(wake_read)
        finally:
            self._selector = None
            for handled, handler in previous.items():
                signal.signal(handled, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_read)
            os.close(wake_write)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _supervise(self, wake_read: int) -> int:
        config = self.config
        self.log.info(
            "supervisor starting",
            pid=os.getpid(),
            db=redact_url(config.db),
            processes=self.processes,
            apps=list(config.apps),
            queues={"default": config.pool_size, **config.queues},
        )
        if not self._open_client():
            self.log.info("supervisor stopped", status=EXIT_FATAL)
            return EXIT_FATAL
        try:
            self._take_signals()  # one that came while the client world started
            if not self._stops:
                for child in self._children:
                    self._spawn(child)
            self._loop(wake_read)
        finally:
            self._close_client()
        status = EXIT_FATAL if self._fatal is not None else EXIT_OK
        self.log.info("supervisor stopped", status=status)
        return status

    def _loop(self, wake_read: int) -> None:
        assert self._selector is not None
        while True:
            self._take_signals()
            self._reap()
            if self._stops and not any(child.process for child in self._children):
                return
            self._restart_due()
            for key, _ in self._selector.select(self._timeout()):
                if key.fileobj == wake_read:
                    with contextlib.suppress(OSError):
                        while os.read(wake_read, 512):
                            pass
                else:
                    self._read(key.data)

    # -- the supervisor's client world --------------------------------------------------------

    def _open_client(self) -> bool:
        """Open and start the client world that invalidates dead children's worlds."""
        config = self.config
        try:
            client = World(
                config.db,
                executor=False,
                create=True,  # the children would create it: the supervisor may come first
                name=f"{config.name}-supervisor",
                fatal_persistence_timeout=config.fatal_persistence_timeout,
                plugins=False,  # it runs no action code
            )
        except DynflowError as exc:  # ValueError (not a database URL) goes to the caller
            self.log.error("cannot open the database", error=str(exc))
            return False
        try:
            client.start()
        except DynflowError as exc:
            client.stop()
            self.log.error("cannot open the database", error=str(exc))
            return False
        self._client = client
        return True

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.stop()
            except DynflowError as exc:  # its record ages out; nothing else is left behind
                self.log.warning(
                    "the supervisor's client world did not stop cleanly", error=str(exc)
                )

    def _invalidate(self, child: _Child, fields: dict[str, Any]) -> None:
        """Invalidate the world of a child that exited (nothing if it deregistered itself)."""
        world_id, child.world_id = child.world_id, None
        if world_id is None or self._client is None:
            return
        try:
            removed = self._client.invalidate(world_id)
        except DynflowError as exc:
            self.log.error("cannot invalidate the dead worker's world", error=str(exc), **fields)
            return
        if removed:
            self.log.warning("invalidated the dead worker's world", **fields)

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        """Start ``child``'s process and send it its configuration."""
        assert self._selector is not None
        ours, theirs = socket.socketpair()
        environment = dict(os.environ)
        environment.setdefault(LOG_LEVEL, "INFO")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=environment,
                process_group=0,  # a terminal's Ctrl-C reaches the supervisor only
            )
        except OSError as exc:
            ours.close()
            delay = child.backoff.next(0.0)
            child.restart_at = time.monotonic() + delay
            self.log.error(
                "cannot start a worker process", worker=child.index, error=str(exc), delay=delay
            )
            return
        finally:
            theirs.close()
        order = {"index": child.index, "config": self.config.to_data()}
        with contextlib.suppress(OSError):  # it died at once: reaped next
            ours.sendall(json.dumps(order).encode() + b"\n")
        ours.setblocking(False)
        child.process, child.channel, child.buffer = process, ours, b""
        child.world_id = child.fatal = None
        child.started_at = time.monotonic()
        self._selector.register(ours, selectors.EVENT_READ, child)
        self.log.info(
            "worker started",
            worker=child.index,
            pid=process.pid,
            name=self.config.world_name(child.index),
        )

    def _read(self, child: _Child) -> bool:
        """Read what ``child`` reported; return whether its socket may hold more."""
        channel = child.channel
        if channel is None:
            return False
        try:
            data = channel.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # its end closed: the child is gone (reaped next)
            self._close_channel(child)
            return False
        child.buffer += data
        while b"\n" in child.buffer:
            line, _, child.buffer = child.buffer.partition(b"\n")
            self._report(child, line)
        return True

    def _report(self, child: _Child, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            self.log.warning("unreadable report from a worker", worker=child.index, line=repr(line))
            return
        pid = child.process.pid if child.process is not None else None
        if "world_id" in report:
            child.world_id = str(report["world_id"])
            self.log.info("worker world", worker=child.index, pid=pid, world_id=child.world_id)
        if "fatal" in report:
            child.fatal = str(report["fatal"])
        if "error" in report:
            self.log.error(
                "worker could not start its world",
                worker=child.index,
                pid=pid,
                error=report["error"],
            )

    def _close_channel(self, child: _Child) -> None:
        channel, child.channel = child.channel, None
        if channel is not None:
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(channel)
            channel.close()

    def _reap(self) -> None:
        """Handle every child that exited since the last look."""
        for child in self._children:
            process = child.process
            if process is None or process.poll() is None:
                continue
            while self._read(child):  # what it reported before dying
                pass
            self._close_channel(child)
            child.process = None
            self._exited(child, process)

    def _exited(self, child: _Child, process: subprocess.Popen[bytes]) -> None:
        now = time.monotonic()
        ran = now - child.started_at
        status = process.returncode
        fields: dict[str, Any] = {
            "worker": child.index,
            "pid": process.pid,
            "world_id": child.world_id,
            "status": status,
            "ran": round(ran, 3),
        }
        if status < 0:
            fields["signal"] = signal.Signals(-status).name
        if self._stops and status == 0:
            self.log.info("worker exited", **fields)
        else:
            self.log.error("worker exited", requested=bool(self._stops), **fields)
        self._invalidate(child, fields)
        telemetry.current().process_exited(process.pid)
        if child.fatal is not None:
            if self._fatal is None:
                self._fatal = child.fatal
            self.log.critical(
                "worker lost its database for good: stopping the daemon",
                error=child.fatal,
                **fields,
            )
            self._request_stop("fatal")
        elif not self._stops:
            delay = child.backoff.next(ran)
            child.restart_at = now + delay
            self.log.info("restarting worker", worker=child.index, delay=delay)
            telemetry.current().worker_restarted("world")

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.restart_at is not None and child.restart_at <= now and not self._stops:
                child.restart_at = None
                self._spawn(child)

    def _timeout(self) -> float:
        pending = [child.restart_at for child in self._children if child.restart_at is not None]
        if not pending:
            return MAX_WAIT
        return max(0.0, min(min(pending) - time.monotonic(), MAX_WAIT))

    # -- stopping -----------------------------------------------------------------------------

    def _take_signals(self) -> None:
        signals = self._signals[self._seen :]
        self._seen += len(signals)
        for signum in signals:
            self._request_stop(signal.Signals(signum).name)

    def _request_stop(self, reason: str) -> None:
        """Stop gracefully the first time; hurry the children the second; kill them after."""
        self._stops += 1
        for child in self._children:
            child.restart_at = None
        running = [child.process for child in self._children if child.process is not None]
        if self._stops == 1:
            self.log.info(
                "stopping the workers", reason=reason, stop_timeout=self.config.stop_timeout
            )
            send = signal.SIGTERM
        elif self._stops == 2:
            self.log.warning(
                "stopping the workers now: running steps are left running", reason=reason
            )
            # Any second signal stops a world at once. Not SIGTERM again: a child that has
            # not been given the first one yet would get the two as one.
            send = signal.SIGINT
        else:
            self.log.warning("killing the workers", reason=reason)
            send = signal.SIGKILL
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(send)


def _ignore(signum: int, frame: Any) -> None:
    """Do nothing: the signal only wakes the loop, through the wake-up fd."""
