"""`ProcessWorkers`: run jobs in supervised worker processes (``executor="processes"``).

Each worker runs one job at a time over a pipe of its own; a job travels as ``(fn, args)``
pickled with dill, so code defined in ``__main__`` travels by value. One supervisor thread
waits on every worker's pipe and process sentinel at once: a worker that dies (exit, signal,
segfault) fails only its own job, with `WorkerDied`, and is replaced. Every ``on_done`` runs
on that thread, so it must be quick.

A worker exits at once, even in the middle of a job, when the pool's process dies (its end of
the pipe closes): else it would go on running a step that a world restarted on the same
database runs again.

Why a fork server, how ``__main__`` classes travel, how the pool shuts down, and why neither
``multiprocess.Pool`` nor ``ProcessPoolExecutor``: ``docs/internals/processes.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import multiprocess
from multiprocess import forkserver
from multiprocess.connection import wait

from pydynflow.adapters import telemetry
from pydynflow.logging import configure_logging, worker_settings
from pydynflow.outcome import PhaseOutcome
from pydynflow.wire.code import dumps, loads, point_at_main

log = logging.getLogger(__name__)

OnDone = Callable[[Any, Any], None]
Job = tuple[bytes, OnDone]  # the pickled (fn, args) and its callback
_STOP = b""  # the message telling an idle worker to exit


class WorkerDied(Exception):
    """The worker process running a job died: the job's outcome is unknown.

    ``exitcode`` is the exit status if the process exited, ``signal`` the signal number if a
    signal killed it (the other one is None).
    """

    def __init__(self, message: str, exitcode: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = signal

    @classmethod
    def of(cls, pid: int | None, exitcode: int | None) -> WorkerDied:
        """Describe the death of process ``pid`` from its multiprocess ``exitcode``."""
        if exitcode is not None and exitcode < 0:
            number = -exitcode
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "signal"
            return cls(f"worker process {pid} killed by signal {name} ({number})", signal=number)
        return cls(f"worker process {pid} died with exit code {exitcode}", exitcode=exitcode)


class _Worker:
    """One worker process as the pool sees it."""

    __slots__ = ("process", "conn", "job", "replied", "eof", "stop_deadline", "terminated")

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.job: Job | None = None  # the job it runs, if any
        self.replied = False  # it finished a job (so it did start up)
        self.eof = False  # its pipe is closed: the sentinel is about to fire
        self.stop_deadline: float | None = None  # set once it was told to stop
        self.terminated = False  # SIGTERM sent after the grace period


class ProcessWorkers:
    """Run jobs on ``size`` supervised worker processes named ``<name>-<n>``.

    Implements `WorkerPool`. A job that raises reports the exception (or a `RuntimeError` with
    its type and message if it does not pickle); a job whose process dies (``os._exit``, a
    signal, a segfault, ``sys.exit``) reports `WorkerDied` and its worker is replaced.
    """

    stop_grace = 5.0  # seconds an idle worker gets to exit after the stop message

    def __init__(
        self, size: int, name: str = "pydynflow-process", *, start_method: str = "forkserver"
    ) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one process, got size={size}")
        self.size = size
        self.name = name
        self._context = multiprocess.get_context(start_method)
        if start_method == "forkserver":
            _preload_in_forkserver(self._context)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a worker is added
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._pending: deque[Job] = deque()
        self._unpicklable: list[tuple[OnDone, BaseException]] = []  # reported by the supervisor
        self._closed = False
        self._started = 0  # workers started so far (for their names)
        self._retry_at = 0.0  # when to try again after a failed worker start
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            for _ in range(size):
                self._add(self._start_worker())
        except BaseException:
            for worker in self._workers:
                worker.process.kill()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"{name}-supervisor", daemon=True
        )
        self._supervisor.start()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: OnDone) -> None:
        """Queue ``fn(*args)``; ``on_done(result, None)`` or ``on_done(None, error)`` follows.

        ``on_done`` runs on the supervisor thread, also when ``fn`` or ``args`` do not pickle.
        """
        if self._closed:
            raise RuntimeError(f"worker pool {self.name!r} is shut down")
        try:
            payload: bytes | None = dumps((fn, args))
        except Exception as exc:
            payload, error = None, exc
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker pool {self.name!r} is shut down")
            if payload is None:
                self._unpicklable.append((on_done, error))
                self._wake()
                return
            if not self._idle:
                self._pending.append((payload, on_done))
                return
            worker = self._idle.pop()
            worker.job = (payload, on_done)
        _send(worker, payload)

    def shutdown(self, wait: bool = False) -> None:
        """Take no more jobs; the queued ones still run, then the workers stop.

        With ``wait``, return once every job is done and every worker has exited. Idempotent.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._wake()
        if wait and threading.current_thread() is not self._supervisor:
            self._supervisor.join()

    @property
    def workers(self) -> int:
        """Return how many worker processes are alive."""
        with self._lock:
            return self._alive()

    def wait_for_workers(self, timeout: float | None = None) -> bool:
        """Wait until ``size`` workers are alive (dead ones replaced); return whether so."""
        with self._changed:
            return self._changed.wait_for(lambda: self._alive() == self.size, timeout)

    def _alive(self) -> int:
        sentinels = [worker.process.sentinel for worker in self._workers]
        return len(sentinels) - len(wait(sentinels, 0)) if sentinels else 0

    def __enter__(self) -> ProcessWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    # -- supervisor thread -------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            while self._supervise_once():
                pass
        except BaseException:  # never expected: fail loudly rather than hang every caller
            log.exception("supervisor of worker pool %r crashed", self.name)
            raise
        finally:
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    def _supervise_once(self) -> bool:
        """Wait for one batch of replies and deaths and handle it; False once all stopped."""
        with self._lock:
            if self._closed and not self._pending:
                for worker in self._idle:
                    _send(worker, _STOP)
                    worker.stop_deadline = time.monotonic() + self.stop_grace
                self._idle.clear()
            if self._closed and not self._workers and not self._pending:
                return False
            unpicklable, self._unpicklable = self._unpicklable, []
            waiting: dict[Any, _Worker] = {}
            for worker in self._workers:
                waiting[worker.process.sentinel] = worker
                if not worker.eof:
                    waiting[worker.conn] = worker
            short = len(self._workers) < self.size and (not self._closed or bool(self._pending))
        for on_done, error in unpicklable:
            self._call(on_done, None, error)
        if short and time.monotonic() >= self._retry_at:
            self._top_up()
            return True
        ready = wait([self._wake_r, *waiting], self._timeout(short))
        for item in sorted(ready, key=lambda item: isinstance(item, int)):  # replies first
            owner = waiting.get(item)
            if owner is None:
                _drain(self._wake_r)
            elif item is owner.conn:
                self._receive(owner)
            elif owner in self._workers:
                self._bury(owner)
        self._stop_stragglers()
        return True

    def _timeout(self, short: bool) -> float | None:
        now = time.monotonic()
        deadlines = [w.stop_deadline for w in self._workers if w.stop_deadline is not None]
        if short:
            deadlines.append(self._retry_at)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _receive(self, worker: _Worker) -> None:
        try:
            reply = worker.conn.recv_bytes()
        except (EOFError, OSError):
            worker.eof = True  # the process is exiting: its sentinel tells how
            return
        worker.replied = True
        with self._lock:
            job, worker.job = worker.job, None
            payload = self._next_job(worker)
        if payload is not None:
            _send(worker, payload)
        if job is not None:
            self._deliver(job[1], reply)

    def _bury(self, worker: _Worker) -> None:
        """Handle the death of ``worker``: fail its job; `_top_up` replaces it."""
        while not worker.eof and worker.job is not None and worker.conn.poll():
            self._receive(worker)  # a reply sent just before the exit still counts
        worker.process.join()  # the sentinel fired: returns at once
        died = WorkerDied.of(worker.process.pid, worker.process.exitcode)
        with self._lock:
            self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            job, worker.job = worker.job, None
            worker.process.close()
        if worker.stop_deadline is None:  # not asked to stop: `_top_up` replaces it
            telemetry.current().worker_restarted("step")
        if job is not None:
            self._call(job[1], None, died)
        elif worker.stop_deadline is None and not worker.replied:  # it cannot start up
            log.error("worker pool %r: a new worker died: %s (retrying in 1 s)", self.name, died)
            self._retry_at = time.monotonic() + 1.0
        elif worker.stop_deadline is None:
            log.warning("worker pool %r: an idle worker died: %s", self.name, died)

    def _top_up(self) -> None:
        """Start one worker in place of a dead one (and retry later if that fails)."""
        try:
            worker = self._start_worker()
        except Exception:
            log.exception("worker pool %r could not start a worker", self.name)
            self._retry_at = time.monotonic() + 1.0
            return
        self._add(worker)

    def _stop_stragglers(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.stop_deadline is not None and now >= worker.stop_deadline:
                if worker.terminated:
                    worker.process.kill()
                else:
                    worker.process.terminate()
                    worker.terminated = True
                worker.stop_deadline = now + self.stop_grace

    def _deliver(self, on_done: OnDone, reply: bytes) -> None:
        try:
            ok, value = loads(reply)
        except Exception as exc:
            ok, value = False, RuntimeError(f"a job's reply does not unpickle: {_describe(exc)}")
        if ok:
            self._call(on_done, value, None)
        else:
            self._call(on_done, None, value)

    def _call(self, on_done: OnDone, result: Any, error: Any) -> None:
        try:
            on_done(result, error)
        except Exception:
            log.exception("on_done callback of worker pool %r failed", self.name)

    # -- any thread --------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        self._started += 1
        mine, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve,
            args=(theirs, worker_settings()),
            name=f"{self.name}-{self._started}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            theirs.close()
        return _Worker(process, mine)

    def _add(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.append(worker)
            self._changed.notify_all()
            payload = self._next_job(worker)
        if payload is not None:
            _send(worker, payload)

    def _next_job(self, worker: _Worker) -> bytes | None:
        """Give ``worker`` the next queued job, or mark it idle (hold the lock)."""
        if self._pending:
            worker.job = self._pending.popleft()
            return worker.job[0]
        self._idle.append(worker)
        return None

    def _wake(self) -> None:
        """Wake the supervisor (hold the lock)."""
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):  # wake-ups are pending already
                os.write(self._wake_w, b"!")


def _preload_in_forkserver(context: Any) -> None:
    """Have the fork server import this module (and pydynflow) once, not every worker.

    Only takes effect if the fork server has not started yet; keeps its other preloads.
    """
    current = getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None)
    preload = list(current if current is not None else ["__main__"])
    if __name__ not in preload:
        context.set_forkserver_preload([*preload, __name__])


def _send(worker: _Worker, payload: bytes) -> None:
    with contextlib.suppress(OSError):  # the worker died: the supervisor fails its job
        worker.conn.send_bytes(payload)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__qualname__}: {exc}"


# -- worker process ------------------------------------------------------------------------


def _serve(conn: Any, logging_settings: dict[str, Any] | None = None) -> None:
    """Worker process main loop: run jobs from ``conn`` until the stop message or EOF.

    ``logging_settings``: `configure_logging` arguments, so that the worker's lines (the
    user code's included) are rendered as the world's are (JSON on stderr off a terminal).
    """
    # Ctrl-C and SIGTERM are the world's: a service manager signals the whole process
    # group, and a worker must finish its step while the world stops gracefully (it exits
    # with the world anyway: see `_exit_with_pool`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings = logging_settings or {}
    configure_logging(**settings, force=bool(settings))  # over what the fork server had
    lifeline = os.dup(conn.fileno())  # its own number: never closed, so never reused
    threading.Thread(
        target=_exit_with_pool, args=(lifeline,), name="pydynflow-lifeline", daemon=True
    ).start()
    point_at_main()
    while True:
        try:
            payload = conn.recv_bytes()
        except EOFError:  # the pool's process is gone
            return
        if payload == _STOP:
            return
        try:
            conn.send_bytes(_run(payload))
        except OSError:  # the pool's process is gone
            return


def _exit_with_pool(fd: int) -> None:
    """Exit the worker at once when the pool's end of the pipe ``fd`` closes.

    The main thread would only notice at its next ``recv_bytes``, after its job: by then a
    world restarted on the same database may be running that step again. Only the pool's
    process holds that end, so it closes when that process dies, however it dies.
    """
    watcher = select.poll()
    watcher.register(fd, 0)  # only POLLHUP, POLLERR and POLLNVAL can wake it
    watcher.poll()
    os._exit(0)


def _run(payload: bytes) -> bytes:
    """Run one job; return the pickled reply (``SystemExit`` ends the process instead)."""
    try:
        fn, args = loads(payload)
        result = fn(*args)
    except Exception as exc:
        with contextlib.suppress(Exception):
            exc.add_note(f"in worker process {os.getpid()}:\n{traceback.format_exc().rstrip()}")
        if _round_trips(exc):
            return dumps((False, exc))
        return dumps((False, RuntimeError(_describe(exc))))
    if isinstance(result, PhaseOutcome) and not _round_trips(result.exception):
        result = dataclasses.replace(result, exception=None)  # keep the rest of the outcome
    try:
        return dumps((True, result))
    except Exception as exc:
        error = RuntimeError(f"the result of {_name(fn)} does not pickle: {_describe(exc)}")
        return dumps((False, error))


def _round_trips(value: Any) -> bool:
    """Return whether ``value`` survives pickling (an exception may dump but not load)."""
    if value is None:
        return True
    try:
        loads(dumps(value))
    except Exception:
        return False
    return True


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


__all__ = ["ProcessWorkers", "WorkerDied"]
