"""`ProcessWriter`: the world's side of a writer process that owns the write connection.

Why a process: sqlite3 and psycopg2 release the GIL around every statement and commit, and
a thread taking it back waits up to the switch interval whenever another thread runs Python
code, as the world's always do; in a process of its own the writer has a GIL to itself.
`submit` pickles a batch into the pipe without waiting for earlier replies; a reader thread
takes the replies and acknowledges each batch. The reader also supervises: if the child
dies, it starts another and sends it every batch not yet acknowledged (what the dead one
committed unanswered is answered from its `Ledger`); a batch under which `MAX_DELIVERIES`
children died fails. ``PYDYNFLOW_WRITER_CPUS`` (`writer_cpus`) pins the child to CPUs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from pydynflow.errors import FatalPersistenceError, PersistenceError
from pydynflow.promise import waking_later
from pydynflow.storage.database import redact_url
from pydynflow.storage.writer.base import Done, FatalOnce, OnFatal, wait_for
from pydynflow.storage.writer.changes import ChangeSet
from pydynflow.storage.writer.child import BOOTSTRAP
from pydynflow.storage.writer.commit import FATAL_TIMEOUT, failure, log, log_retry
from pydynflow.storage.writer.pipe import (
    READY,
    RETRYING,
    dumps_requests,
    enlarge_pipe,
    numbered,
    receive,
    send,
    send_all,
)
from pydynflow.wire import plain

__all__ = ["MAX_DELIVERIES", "START_TIMEOUT", "WRITER_CPUS", "ProcessWriter", "writer_cpus"]

START_TIMEOUT = 60.0
"""Seconds for a new writer process to import and open the database."""
MAX_DELIVERIES = 3
"""Writer processes a batch may see die under it before it fails."""
WRITER_CPUS = "PYDYNFLOW_WRITER_CPUS"
"""The environment variable naming the CPUs writer processes run on (`writer_cpus`)."""


class _Batch:
    """A batch sent to the child and not yet acknowledged (``payload``: its number, then
    the pickled requests)."""

    __slots__ = ("deliveries", "done", "payload")

    def __init__(self, payload: bytes, done: Done) -> None:
        self.payload = payload
        self.done = done
        self.deliveries = 1


class ProcessWriter:
    """Write batches in a supervised child process that owns the write connection.

    `submit` pickles a batch and writes it to the child's pipe without waiting; a reader
    thread takes the child's replies and calls each batch's ``done``. `wait_ready` waits for
    the child to have opened the database (it imports the storage layer first).

    Args:
        url: the database's URL (a SQLite file or PostgreSQL).
        cpus: where the child runs (`writer_cpus`); None: the world's CPUs.
        owner: the world whose writer this is: its `Ledger` record's owner.
        fatal_timeout: seconds a transaction failing for a passing reason is retried before
            its batches fail with `FatalPersistenceError`.
        on_fatal: called once, from the reader thread, with the first such error (before
            that batch's ``done``). It must not wait for the writer (`close`, `drain`): the
            reader delivers the acknowledgements those wait for.
    """

    def __init__(
        self,
        url: str,
        cpus: set[int] | None = None,
        owner: str | None = None,
        *,
        fatal_timeout: float = FATAL_TIMEOUT,
        on_fatal: OnFatal | None = None,
    ) -> None:
        self.url = url
        self.cpus = cpus
        self.key = uuid.uuid4().hex  # names this writer's `Ledger` record
        self.owner = owner
        self.fatal_timeout = fatal_timeout
        self._on_fatal = FatalOnce(on_fatal)
        self._numbers = itertools.count(1)  # batch numbers, in the order batches are sent
        self.restarts = 0
        self.transactions = 0  # committed by children (each may hold several batches)
        self.busy_seconds = 0.0  # spent by children on transactions (decode, encode, SQL, commit)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        # Sent, not yet acknowledged; oldest first. Appended (then sent) under `_lock`; the
        # reader pops without it (a deque's ends are thread-safe), see `_read_replies`.
        self._inflight: deque[_Batch] = deque()
        self._lock = threading.RLock()  # guards the child's lifecycle and the pipe's input
        self._drained = threading.Condition(threading.Lock())  # `_inflight` became empty
        self._reader: threading.Thread | None = None
        self._closed = False
        self._start()

    def submit(self, requests: Sequence[ChangeSet], done: Done) -> None:
        """Send ``requests`` to be committed; ``done`` is called from the reader thread
        (or at once with the error, if no child can be started)."""
        self.submit_all([(requests, done)])

    def submit_all(self, batches: Sequence[tuple[Sequence[ChangeSet], Done]]) -> None:
        """`submit` each ``(requests, done)`` batch, in order, with one write to the pipe.

        One write: each write lets go of the GIL, and taking it back in a busy world can
        take the switch interval (see `pydynflow.storage.writer.pipe.send_all`).
        """
        pickled, unsendable = [], []
        for requests, done in batches:
            try:
                payload = dumps_requests(requests)
            except Exception as exc:  # a value the engine should have made plain: a bug
                unsendable.append((done, f"the batch cannot be sent to the writer: {exc!r}"))
                continue
            pickled.append((payload, len(requests), done))
        for done, why in unsendable:  # fail alone, never stop the persistence actor
            self._acknowledge(done, set(), why)
        with self._lock:
            error = self._ensure_child()
            if error is None:
                sent = []
                for payload, count, done in pickled:
                    # Numbered under the lock: numbers grow in the order the child reads.
                    number = next(self._numbers)
                    sent.append(_Batch(numbered(number, count, payload), done))
                self._inflight.extend(sent)
                proc = self._proc
                assert proc is not None and proc.stdin is not None
                with contextlib.suppress(OSError, ValueError):
                    # A dead child is the reader's to find (end of its output): it starts
                    # a new one and sends it every batch in flight, these included.
                    send_all(proc.stdin, [batch.payload for batch in sent])
        if error is not None:
            for _, _, done in pickled:
                done(set(), error)

    def write(self, requests: Sequence[ChangeSet]) -> set[int]:
        """Commit ``requests`` and wait; return the indexes of refused claims.

        Raises:
            PersistenceError: the transaction failed.
        """
        return wait_for(self, requests)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every batch submitted so far is acknowledged; False on timeout."""
        with self._drained:
            return self._drained.wait_for(lambda: not self._inflight, timeout)

    def wait_ready(self) -> None:
        """Wait until the child has opened the database.

        Raises:
            PersistenceError: it could not (the message says why).
        """
        with self._lock:
            error = self._ensure_child()
        if error is not None:
            raise error

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child once it has committed what it was sent; idempotent.

        Batches still unacknowledged when the child is gone fail with a `PersistenceError`.
        """
        with self._lock:
            if self._closed:
                return
        # First the batches in flight: closing the pipe makes the child exit at once (it
        # cannot tell a close from the world's death), committed or not.
        self.drain(timeout)
        with self._lock:
            self._closed = True
            proc, reader = self._proc, self._reader
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()  # end of input: the child exits after its last reply
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        if proc is not None:
            try:
                proc.wait(timeout if self._ready else 0.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
        with self._lock:
            self._proc = None
            self._fail_inflight("the writer was closed before the batch was committed")

    @property
    def pid(self) -> int | None:
        """Return the child's process id (None once closed)."""
        proc = self._proc
        return None if proc is None or self._closed else proc.pid

    # -- the child's lifecycle (under the lock) ---------------------------------------------

    def _start(self) -> None:
        """Start a child; `_ensure_child` waits for it to be ready."""
        # The directory holding the pydynflow package: pydynflow/storage/writer/process.py.
        root = Path(os.path.abspath(__file__)).parents[3]
        self._proc = subprocess.Popen(
            [
                *(sys.executable, "-c", BOOTSTRAP, str(root)),
                *(self.url, self.key, self.owner or "", repr(float(self.fatal_timeout))),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        enlarge_pipe(self._proc.stdin)
        self._ready = False
        if self.cpus is not None:
            try:
                os.sched_setaffinity(self._proc.pid, self.cpus)
            except (AttributeError, OSError) as exc:  # not Linux, or CPUs it may not use
                log().warning(
                    "writer process left on the world's CPUs",
                    cpus=sorted(self.cpus),
                    error=str(exc),
                )

    def _ensure_child(self) -> PersistenceError | None:
        """Make sure a ready child and the reader run; return the error if none can."""
        if self._closed:
            return PersistenceError(f"the writer for {redact_url(self.url)} is closed")
        if self._proc is None:
            self.restarts += 1
            try:
                self._start()
            except OSError as exc:  # no process could be started (limits, memory)
                return PersistenceError(f"the writer process could not be started: {exc}")
        if not self._ready:
            proc = self._proc
            assert proc is not None
            error = self._await_ready(proc)
            if error is not None:
                return error
        if self._reader is None:
            self._reader = threading.Thread(
                target=self._read_replies, name="pydynflow-writer-replies", daemon=True
            )
            self._reader.start()
        return None

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> PersistenceError | None:
        assert proc.stdout is not None
        try:
            if not select.select([proc.stdout], [], [], START_TIMEOUT)[0]:
                raise OSError(f"no answer within {START_TIMEOUT:.0f} s")
            ready = receive(proc.stdout)
        except (OSError, EOFError, ValueError) as exc:
            ready = f"the writer process for {redact_url(self.url)} did not start: {exc}".encode()
        if ready != READY:
            proc.kill()
            proc.wait()
            self._proc = None
            return PersistenceError(ready.decode("utf-8", "replace"))
        self._ready = True
        return None

    # -- the reader thread ----------------------------------------------------------------

    def _read_replies(self) -> None:
        """Take the child's replies in order and acknowledge the batches; replace a dead
        child. Ends when the writer is closed and its child has exited."""
        while True:
            # Not under `_lock`, which `submit` holds while it writes to the pipe: a write
            # lets go of the GIL, and taking it back can take the switch interval in a busy
            # world; the reader waiting for the lock meanwhile would hold up every
            # acknowledgement.
            proc = self._proc
            if proc is None:
                with self._lock:
                    if self._proc is None:
                        self._reader = None
                        return
                    continue
            assert proc.stdout is not None
            try:
                reply = receive(proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                if not self._replace(proc, exc):
                    return
                continue
            message = plain.loads(reply)  # our own child's
            if message[0] == RETRYING:
                log_retry(*message[1:])
                continue
            _, refused, error, fatal, busy, transactions = message
            self.busy_seconds += busy
            self.transactions += transactions
            try:
                batch = self._inflight.popleft()  # appended before it was sent: it is there
            except IndexError:  # failed meanwhile by `close` after its timeout
                continue
            if not self._inflight:
                self._notify_drained()
            with waking_later():  # callers waiting for these commits wake once this is done
                self._acknowledge(batch.done, set(refused), error, fatal)

    def _replace(self, proc: subprocess.Popen[bytes], exc: BaseException) -> bool:
        """Replace the dead ``proc`` and resend what is in flight; False to stop reading."""
        with self._lock:
            if self._closed:
                self._reader = None
                self._notify_drained()
                return False
            how = _death(proc)
            self._proc = None
            if self._inflight and self._inflight[0].deliveries >= MAX_DELIVERIES:
                batch = self._inflight.popleft()
                self._acknowledge(
                    batch.done,
                    set(),
                    f"the writer process ({redact_url(self.url)}) {how} during a commit "
                    f"{MAX_DELIVERIES} times in a row ({type(exc).__name__}); giving up on it",
                )
            return self._restart()

    def _restart(self) -> bool:
        """Start children until one is ready, then send it what is in flight (under the
        lock); False to stop reading.

        A child that dies (or gives up) before it is ready counts as a delivery of every
        batch in flight: those that reach `MAX_DELIVERIES` fail with its error, the others
        go to the next child. With nothing left in flight, the next `submit` starts one.
        """
        while True:
            self.restarts += 1
            try:
                self._start()
            except OSError as start_error:  # the reader must not die: fail what is in flight
                self._proc = None
                self._fail_inflight(f"the writer process could not be restarted: {start_error}")
                self._reader = None
                return False
            assert self._proc is not None
            error = self._await_ready(self._proc)
            if error is None:
                break
            for batch in self._inflight:
                batch.deliveries += 1
            self._fail_delivered(
                f"{error} ({MAX_DELIVERIES} writer processes in a row died under the batch)"
            )
            if not self._inflight:
                self._reader = None
                return False
        proc = self._proc
        assert proc.stdin is not None
        for batch in self._inflight:
            batch.deliveries += 1
            try:
                send(proc.stdin, batch.payload)
            except (OSError, ValueError):
                break  # dead again: the next round of the reader's loop finds out
        return True

    def _fail_delivered(self, error: str) -> None:
        """Fail the batches in flight that reached `MAX_DELIVERIES` (under the lock).

        They are the oldest: a later batch missed the deliveries made before it came.
        """
        while self._inflight and self._inflight[0].deliveries >= MAX_DELIVERIES:
            self._acknowledge(self._inflight.popleft().done, set(), error)
        if not self._inflight:
            self._notify_drained()

    def _fail_inflight(self, error: str) -> None:
        """Acknowledge every batch in flight with ``error`` (under the lock)."""
        while self._inflight:
            try:
                batch = self._inflight.popleft()
            except IndexError:  # the reader took the last one
                break
            self._acknowledge(batch.done, set(), error)
        self._notify_drained()

    def _notify_drained(self) -> None:
        with self._drained:
            self._drained.notify_all()

    def _acknowledge(
        self, done: Done, refused: set[int], error: str | None, fatal: bool = False
    ) -> None:
        """Call ``on_fatal`` for the first fatal error (so the owner knows before any sender
        learns of it), then ``done``."""
        exception = failure(error, fatal)
        if isinstance(exception, FatalPersistenceError):
            self._on_fatal(exception)
        try:
            done(refused, exception)
        except Exception:  # a broken callback must not stop the reader
            log().exception("persistence acknowledgement failed")


def _death(proc: subprocess.Popen[bytes]) -> str:
    """Reap ``proc`` (killing it if it is still there) and say how it ended."""
    try:
        code = proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    with contextlib.suppress(OSError):
        if proc.stdout is not None:
            proc.stdout.close()
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name} ({-code})"
    return f"exited with code {code}"


def writer_cpus() -> set[int] | None:
    """Return the CPUs ``PYDYNFLOW_WRITER_CPUS`` names (None when it is unset or empty).

    Raises:
        ValueError: it is not a CPU list (``1``, ``0,2``, ``2-3,5``), naming what is wrong.
    """
    text = os.environ.get(WRITER_CPUS, "").strip()
    if not text:
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            low, high = int(first), int(last or first)
            if low < 0 or high < low:
                raise ValueError(part)
            cpus.update(range(low, high + 1))
    except ValueError:
        raise ValueError(f"{WRITER_CPUS}={text!r} is not a CPU list such as 1 or 2-3,5") from None
    return cpus
