"""Where the persistence actor's transactions run: a writer process, or the actor's own thread.

The persistence actor stays the only writer of a world; a *writer* is the part of it that
holds the write connection and turns batches of snapshots into transactions. A writer takes
a batch with `submit(requests, done)` and calls ``done(refused, error)`` once the batch is
committed (or has failed): acknowledgements follow durability, in the order batches came.

`ProcessWriter` (SQLite files and PostgreSQL, the default): the connection lives in a child
process, a fresh interpreter importing only the storage layer (not a fork of this
multi-threaded process, and the user's ``__main__`` is never imported there). Why: Python's
sqlite3 and psycopg2 release the GIL around every statement and every commit, and a thread
getting the GIL back waits up to the switch interval (5 ms) whenever another thread is
running Python code. In the world's process the dispatchers, the workers and the callers
planning new plans always are, so the persistence thread waited for the GIL most of the
time: in W1 it spent 0.98 s in its transactions for 0.31 s of CPU (88 rows took 1 ms in a
quiet process, 665 ms next to one busy thread). In its own process the writer has a GIL to
itself and a core of its own.

The child does the group commit: it takes the batches waiting in its pipe (as many as
`_Pacer` allows: about four commits' time of writing) and commits them in one transaction,
then replies to each in order. The world's side never waits for a
reply before sending the next batch: a reader thread takes the replies and runs the
acknowledgements. Why: when the persistence actor waited for each reply, the child sat idle
from its reply until the next batch came, which was however long the actor's thread took to
get the GIL back in the busy world, then to run the acknowledgements and pickle the next
batch: in W1, 1-6 ms per commit, a third of the wall time.

Supervision: if the child dies (killed, crashed), the reader starts a new one and sends it
every batch not yet acknowledged, in order; one the dead child had committed without
replying is answered from the record that transaction left (`_Ledger`), not written again.
A batch that kills `MAX_DELIVERIES` children in a row fails with a `PersistenceError` instead;
a replacement that dies before it is ready counts as a delivery of every batch in flight. When
the world's process dies, its end of the pipe closes and the child exits at once, even
inside a transaction (which then rolls back, as after any crash; nothing half-written is
left), so nothing is committed after the world is gone.

`ThreadWriter` (in-memory SQLite, whose database no other process can open, or a `Storage`
built on a peewee database object): the transaction runs on the persistence actor's thread.
``PYDYNFLOW_PERSISTENCE=thread`` forces it for any database.

``PYDYNFLOW_WRITER_CPUS`` (Linux: a CPU list such as ``1`` or ``2-3,5``) runs the writer
process on those CPUs; by default it inherits the world's. With the world's process pinned
to one CPU (``taskset -c 0``), give the writer another one: see docs/performance.md.

Both ride out a database outage. A transaction that failed for a passing reason (a lock held
by another process, a lost connection, a full disk: the driver's ``OperationalError``) is
tried again after a growing pause (`FIRST_PAUSE` doubling up to `MAX_PAUSE`), on a fresh
connection if the old one broke, for up to ``fatal_timeout`` seconds; its batches are not
acknowledged meanwhile, and a warning is logged about once a second (the child sends it to
the world as a notice). If the time runs out they fail with `FatalPersistenceError` and the
writer calls its ``on_fatal`` once: persistence is gone, and the world should stop. Before a
retry the child reads its `_Ledger` record: an attempt whose connection was lost during its
``COMMIT`` may have committed, and is then not written again. Other failures (a foreign key,
a value that cannot be encoded) fail at once.

Fault hooks for tests, read by the child when it starts: ``PYDYNFLOW_WRITER_EXIT_AFTER_COMMITS``
(`EXIT_AFTER_COMMITS`), ``PYDYNFLOW_WRITER_EXIT_AT_START`` (`EXIT_AT_START`) and
``PYDYNFLOW_WRITER_FAULT_FILE`` (`FAULT_FILE`).

Batches cross the pipe as pickles of plain tuples made by this module (never anything read
from the database).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydynflow.errors import FatalPersistenceError, PersistenceError
from pydynflow.promise import waking_later
from pydynflow.storage.store import redact_url

# One change set as it crosses to the writer: step, action and plan snapshots, claim
# ((plan_id, from_states) or None), chunks, envelope_add, envelope_pop, envelope_clear.
Request = tuple[Any, ...]
# Called once a submitted batch is committed: (indexes of refused claims, error or None).
Done = Callable[[set[int], "PersistenceError | None"], None]
# Called with the first `FatalPersistenceError` a writer delivers.
OnFatal = Callable[[FatalPersistenceError], object]
# Told about a transaction being retried: (failed attempts, seconds since the first, cause).
Notice = Callable[[int, float, str], None]
# A batch's answer in the child: (refused claims, error or None, whether the error is fatal).
_Answer = tuple[set[int], str | None, bool]

_HEADER = struct.Struct("!I")
_NUMBER = struct.Struct("!QI")  # a batch's number and request count, ahead of its pickle
LEDGER = "pydynflow.WriterLedger"  # the coordinator record class of `_Ledger`
# The child imports the storage layer only: a bare `pydynflow` package object stands in for
# the real one, whose __init__ would import the whole engine (0.5 s instead of 0.2 s).
_BOOTSTRAP = """\
import sys, types
package = types.ModuleType("pydynflow")
package.__path__ = [sys.argv[1] + "/pydynflow"]
sys.modules["pydynflow"] = package
from pydynflow.actors.writer import main
main(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
"""
_READY = b"pydynflow-writer-ready"
START_TIMEOUT = 60.0  # seconds for a new writer process to import and open the database
FATAL_TIMEOUT = 60.0  # seconds a transaction failing for a passing reason is retried (default)
FIRST_PAUSE = 0.01  # seconds before the first retry; doubled after each failed attempt
MAX_PAUSE = 1.0  # seconds between two attempts at most
NOTICE_INTERVAL = 1.0  # seconds between two warnings about one transaction being retried
MAX_DELIVERIES = 3  # children a batch may see die under it before it fails
GROUP_LIMIT = 256  # batches the child commits together at most
# Requests a transaction takes at least / at most, whatever `_Pacer` measures.
GROUP_REQUESTS_MIN = 16
GROUP_REQUESTS_MAX = 4096
# For fault tests: the child exits right after its N-th transaction commits, before it
# replies (the window `_Ledger` covers), with this status.
EXIT_AFTER_COMMITS = "PYDYNFLOW_WRITER_EXIT_AFTER_COMMITS"
EXIT_AFTER_COMMITS_STATUS = 75
# For fault tests: a directory of token files. A child that finds one there when it has
# opened the database, before it says it is ready, deletes it and kills itself (SIGKILL):
# each token kills one child.
EXIT_AT_START = "PYDYNFLOW_WRITER_EXIT_AT_START"
# Messages from the child: a batch's answer, or a notice that a transaction is retried.
_ANSWER, _RETRYING = 0, 1


def write_requests(
    storage: Any, requests: Sequence[Request], after: Callable[[set[int]], Any] | None = None
) -> set[int]:
    """Write ``requests`` in one transaction of ``storage``; return the refused claims' indexes.

    Requests carry snapshots (`pydynflow.storage.Storage.step_snapshot` and friends), encoded
    here. Later changes to the same row win; a plan's full row (with its flows) is written
    before metadata-only updates of it, so an insert never lacks its flows. A request whose
    claim is refused writes nothing.
    """
    refused: set[int] = set()
    full: dict[str, tuple[Any, ...]] = {}
    meta: dict[str, tuple[Any, ...]] = {}
    steps: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    actions: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    with storage.transaction():
        for index, request in enumerate(requests):
            claim = request[3]
            if claim is not None and not storage.claim_plan(claim[0], claim[1]):
                refused.add(index)
                continue
            for snapshot in request[2]:
                (full if snapshot[10] is not None else meta)[snapshot[0]] = snapshot
            for snapshot in request[0]:
                steps[(snapshot[0], snapshot[1])] = snapshot
            for snapshot in request[1]:
                actions[(snapshot[0], snapshot[1])] = snapshot
        plan_row, step_row, action_row = (
            storage.plan_row_of,
            storage.step_row_of,
            storage.action_row_of,
        )
        storage.write_rows(
            full_plans=[plan_row(snapshot)[1] for snapshot in full.values()],
            plans=[plan_row(snapshot)[1] for snapshot in meta.values()],
            steps=[step_row(snapshot) for snapshot in steps.values()],
            actions=[action_row(snapshot) for snapshot in actions.values()],
        )
        for index, request in enumerate(requests):  # rarer: events and streaming output
            if index in refused:
                continue
            chunks, envelope_add, envelope_pop, envelope_clear = request[4:8]
            if chunks:
                storage.add_output_chunks(chunks)
            for envelope in envelope_add:  # plan id, step id, payload[, event id]
                storage.add_envelope(*envelope)
            for plan_id, step_id in envelope_pop:
                storage.pop_envelope(plan_id, step_id)
            for plan_id, step_id in envelope_clear:
                storage.clear_envelopes(plan_id, step_id)
        if after is not None:  # in the same transaction (see `_Ledger`)
            after(refused)
    return refused


def commit(
    storage: Any,
    requests: Sequence[Request],
    after: Callable[[set[int]], Any] | None = None,
    *,
    fatal_timeout: float = FATAL_TIMEOUT,
) -> tuple[set[int], str | None]:
    """Write ``requests`` in one transaction, retrying passing failures; never raises.

    ``after(refused)`` runs inside that transaction, once the requests are written.
    Returns the indexes of refused claims and None, or an empty set and what went wrong.
    """
    outcome = _commit(storage, requests, after, deadline=time.monotonic() + fatal_timeout)
    return outcome.refused, outcome.error


class _Outcome(NamedTuple):
    """How `_commit` ended: the refused claims, or what went wrong."""

    refused: set[int]
    error: str | None = None
    fatal: bool = False  # failed for a passing reason until the deadline
    retried: bool = False  # committed, but not at the first attempt


def _commit(
    storage: Any,
    requests: Sequence[Request],
    after: Callable[[set[int]], Any] | None = None,
    *,
    deadline: float,
    notice: Notice | None = None,
    landed: Callable[[], set[int] | None] | None = None,
) -> _Outcome:
    """`commit`, retrying passing failures until ``deadline`` (a `time.monotonic` time).

    ``notice`` hears of the retries, about once a second. ``landed()``, asked before each
    retry, returns the refused claims if the failed attempt committed after all (its
    connection was lost during the ``COMMIT``), else None.
    """
    backoff = _Backoff(deadline, notice)
    while True:
        try:
            if backoff.failures and landed is not None:
                refused = landed()
                if refused is not None:
                    return _Outcome(refused, retried=True)
            refused = write_requests(storage, requests, after)
            return _Outcome(refused, retried=backoff.failures > 0)
        except Exception as exc:
            cause = _describe(exc)
            if not _passing(exc):
                return _Outcome(set(), cause)
            if not backoff.wait(cause):
                return _Outcome(set(), backoff.gave_up(cause), fatal=True)


class _Backoff:
    """The pauses between attempts of a transaction failing for a passing reason."""

    def __init__(self, deadline: float, notice: Notice | None = None) -> None:
        self.deadline = deadline
        self.notice = notice
        self.started = time.monotonic()
        self.failures = 0
        self.pause = FIRST_PAUSE
        self.noticed = -NOTICE_INTERVAL  # when `notice` was last called

    def wait(self, cause: str) -> bool:
        """Take in a failed attempt: pause before the next one, or return False once the
        deadline has passed."""
        self.failures += 1
        now = time.monotonic()
        if now >= self.deadline:
            return False
        if self.notice is not None and now - self.noticed >= NOTICE_INTERVAL:
            self.noticed = now
            self.notice(self.failures, now - self.started, cause)
        time.sleep(min(self.pause, self.deadline - now))  # the last attempt at the deadline
        self.pause = min(self.pause * 2, MAX_PAUSE)
        return True

    def gave_up(self, cause: str) -> str:
        """Return the message of the `FatalPersistenceError` that ends the retries."""
        seconds = time.monotonic() - self.started
        return (
            f"the database could not be written for {seconds:.1f} s ({self.failures} attempts, "
            f"failing for a passing reason each time); giving up. The last failure: {cause}"
        )


def _passing(exc: BaseException) -> bool:
    """Return whether ``exc`` comes from a failure worth retrying (the driver's
    ``OperationalError`` and its kinds: locked, busy, disk full, connection lost,
    serialization failure, server shutting down)."""
    cause: BaseException | None = exc
    while cause is not None:
        if any(kind.__name__ == "OperationalError" for kind in type(cause).__mro__):
            return True
        cause = cause.__cause__
    return False


def _log_retry(failures: int, seconds: float, cause: str) -> None:
    """Warn that a transaction is being retried (a `Notice`)."""
    _log().warning(
        "the database cannot be written; retrying the transaction",
        attempts=failures,
        seconds=round(seconds, 1),
        cause=cause,
    )


class _OnFatal:
    """Call the owner's ``on_fatal`` once, with the first `FatalPersistenceError` delivered."""

    def __init__(self, callback: OnFatal | None) -> None:
        self.callback = callback
        self._first = threading.Lock()  # taken by the first call, never released

    def __call__(self, error: FatalPersistenceError) -> None:
        if self.callback is None or not self._first.acquire(blocking=False):
            return
        try:
            self.callback(error)
        except Exception:  # a broken callback must not stop the writer
            _log().exception("on_fatal callback failed")


def _failure(error: str | None, fatal: bool) -> PersistenceError | None:
    """Return the exception a batch's ``done`` gets for ``error`` (None: committed)."""
    if error is None:
        return None
    return FatalPersistenceError(error) if fatal else PersistenceError(error)


class ThreadWriter:
    """Write batches on the calling thread (the persistence actor's own).

    Args:
        storage: where to write.
        fatal_timeout: seconds a transaction failing for a passing reason is retried before
            its batch fails with `FatalPersistenceError`.
        on_fatal: called once, on the submitting thread, with the first such error (before
            that batch's ``done``).
    """

    def __init__(
        self,
        storage: Any,
        *,
        fatal_timeout: float = FATAL_TIMEOUT,
        on_fatal: OnFatal | None = None,
    ) -> None:
        self.storage = storage
        self.fatal_timeout = fatal_timeout
        self.transactions = 0
        self._on_fatal = _OnFatal(on_fatal)

    def submit(self, requests: Sequence[Request], done: Done) -> None:
        """Commit ``requests`` now, then call ``done`` (on this thread)."""
        deadline = time.monotonic() + self.fatal_timeout
        outcome = _commit(self.storage, requests, deadline=deadline, notice=_log_retry)
        self.transactions += 1
        error = _failure(outcome.error, outcome.fatal)
        if isinstance(error, FatalPersistenceError):
            self._on_fatal(error)  # first: the owner knows before any sender learns it
        done(outcome.refused, error)

    def submit_all(self, batches: Sequence[tuple[Sequence[Request], Done]]) -> None:
        """`submit` each ``(requests, done)`` batch, in order."""
        for requests, done in batches:
            self.submit(requests, done)

    def write(self, requests: Sequence[Request]) -> set[int]:
        """Commit ``requests``; return the indexes of refused claims.

        Raises:
            PersistenceError: the transaction failed (`FatalPersistenceError`: for good).
        """
        return _wait_for(self, requests)

    def drain(self, timeout: float | None = None) -> bool:
        """Nothing is ever in flight: return True."""
        return True

    def wait_ready(self) -> None:
        """Ready at once: the storage is open."""

    def close(self) -> None:
        """Nothing to release: the storage belongs to the world."""


def _wait_for(writer: Any, requests: Sequence[Request]) -> set[int]:
    """Submit ``requests`` to ``writer`` and wait for the commit (for tests and tools)."""
    answer: list[Any] = []
    committed = threading.Event()

    def done(refused: set[int], error: PersistenceError | None) -> None:
        answer[:] = [refused, error]
        committed.set()

    writer.submit(requests, done)
    committed.wait()
    refused, error = answer
    if error is not None:
        raise error
    return refused  # type: ignore[no-any-return]


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
    the child to have opened the database (about 0.2 s: it imports the storage layer).

    Args:
        url: the database's URL (a SQLite file or PostgreSQL).
        cpus: where the child runs (`writer_cpus`); None: the world's CPUs.
        owner: the world whose writer this is: its `_Ledger` record's owner.
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
        self.key = uuid.uuid4().hex  # names this writer's `_Ledger` record
        self.owner = owner
        self.fatal_timeout = fatal_timeout
        self._on_fatal = _OnFatal(on_fatal)
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

    def submit(self, requests: Sequence[Request], done: Done) -> None:
        """Send ``requests`` to be committed; ``done`` is called from the reader thread
        (or at once with the error, if no child can be started)."""
        self.submit_all([(requests, done)])

    def submit_all(self, batches: Sequence[tuple[Sequence[Request], Done]]) -> None:
        """`submit` each ``(requests, done)`` batch, in order, with one write to the pipe.

        One write: each write lets go of the GIL, and taking it back in a busy world can
        take the switch interval (see `_send_all`).
        """
        pickled, unsendable = [], []
        for requests, done in batches:
            try:
                payload = pickle.dumps(list(requests), pickle.HIGHEST_PROTOCOL)
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
                    sent.append(_Batch(_NUMBER.pack(number, count) + payload, done))
                self._inflight.extend(sent)
                proc = self._proc
                assert proc is not None and proc.stdin is not None
                with contextlib.suppress(OSError, ValueError):
                    # A dead child is the reader's to find (end of its output): it starts
                    # a new one and sends it every batch in flight, these included.
                    _send_all(proc.stdin, [batch.payload for batch in sent])
        if error is not None:
            for _, _, done in pickled:
                done(set(), error)

    def write(self, requests: Sequence[Request]) -> set[int]:
        """Commit ``requests`` and wait; return the indexes of refused claims.

        Raises:
            PersistenceError: the transaction failed.
        """
        return _wait_for(self, requests)

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
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen(
            [
                *(sys.executable, "-c", _BOOTSTRAP, root),
                *(self.url, self.key, self.owner or "", repr(float(self.fatal_timeout))),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        _enlarge_pipe(self._proc.stdin)
        self._ready = False
        if self.cpus is not None:
            try:
                os.sched_setaffinity(self._proc.pid, self.cpus)
            except (AttributeError, OSError) as exc:  # not Linux, or CPUs it may not use
                _log().warning(
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
            ready = _receive(proc.stdout)
        except (OSError, EOFError, ValueError) as exc:
            ready = f"the writer process for {redact_url(self.url)} did not start: {exc}".encode()
        if ready != _READY:
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
            # lets go of the GIL, and taking it back can take the switch interval (5 ms) in
            # a busy world; the reader waiting for the lock meanwhile held up every
            # acknowledgement (W1: the reader blocked on it ~60 ms of its ~0.3 s).
            proc = self._proc
            if proc is None:
                with self._lock:
                    if self._proc is None:
                        self._reader = None
                        return
                    continue
            assert proc.stdout is not None
            try:
                reply = _receive(proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                if not self._replace(proc, exc):
                    return
                continue
            message = pickle.loads(reply)  # our own child's
            if message[0] == _RETRYING:
                _log_retry(*message[1:])
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
                _send(proc.stdin, batch.payload)
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
        failure = _failure(error, fatal)
        if isinstance(failure, FatalPersistenceError):
            self._on_fatal(failure)
        try:
            done(refused, failure)
        except Exception:  # a broken callback must not stop the reader
            _log().exception("persistence acknowledgement failed")


def _log() -> Any:
    from pydynflow.logging import get_logger  # not at import: the child imports this module

    return get_logger(component="writer")


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


WRITER_CPUS = "PYDYNFLOW_WRITER_CPUS"


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


def writer_for(
    storage: Any,
    owner: str | None = None,
    *,
    fatal_timeout: float = FATAL_TIMEOUT,
    on_fatal: OnFatal | None = None,
) -> ThreadWriter | ProcessWriter:
    """Return the writer for ``storage``: a process for files and servers, else a thread.

    ``owner`` (a world id) owns the process writer's `_Ledger` record. ``fatal_timeout`` and
    ``on_fatal``: see `ProcessWriter`.
    """
    url = getattr(storage, "url", None)
    in_thread = os.environ.get("PYDYNFLOW_PERSISTENCE", "").lower() == "thread"
    if in_thread or url is None or storage.in_memory:
        return ThreadWriter(storage, fatal_timeout=fatal_timeout, on_fatal=on_fatal)
    return ProcessWriter(url, writer_cpus(), owner, fatal_timeout=fatal_timeout, on_fatal=on_fatal)


# -- the child process ---------------------------------------------------------------------


def main(url: str, key: str, owner: str = "", fatal_timeout: float = FATAL_TIMEOUT) -> None:
    """Run the writer loop on stdin/stdout: open the database at ``url``, commit what arrives.

    The batches waiting in the pipe go into one transaction (as many as `_Pacer` allows, up
    to `GROUP_LIMIT`); each batch gets its own reply, in order, once that transaction is
    committed. ``key`` names the writer's `_Ledger`: batches a dead predecessor committed
    are answered from it. ``fatal_timeout``: how long passing failures are retried.
    """
    # Ctrl-C and SIGTERM are the world's: a service manager signals the whole process group,
    # and the world's graceful stop still commits through this process (which exits when
    # the world's end of the pipe closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin_fd, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    try:
        from pydynflow.storage.store import Storage

        storage = Storage(url, migrate=False)
        ledger = _Ledger(storage, key, owner or None)  # connects now, finds the schema, or fails
    except BaseException as exc:
        _send(stdout, f"the writer process could not open the database: {exc}".encode())
        return
    _die_if_asked_at_start()
    _send(stdout, _READY)
    working = threading.Lock()  # held while a group is being committed and answered
    watcher = threading.Thread(
        target=_exit_with_parent, args=(stdin_fd, working, ledger), daemon=True
    )
    watcher.start()
    child = _Child(storage, ledger, _MessageReader(stdin_fd), stdout, fatal_timeout)
    try:
        while True:
            try:
                first = child.batches.next()
            except EOFError:
                watcher.join(10)  # it forgets the ledger and ends the process
                return
            with working:
                replies = child.answer_group(first)
            # Sent once `working` is free: the world closes the pipe only when it has them
            # all, and the watcher must then find no group at work, or it keeps the ledger.
            _send_all(stdout, replies)
    finally:
        storage.close()


FAULT_FILE = "PYDYNFLOW_WRITER_FAULT_FILE"
"""For fault tests: a JSON file ``{"plan": id, "step": n, "state": s}``; while it exists, a
transaction writing that step in that state fails (not a passing failure), and once the
batch carrying it has failed on its own the file is deleted: one failed commit."""


class _Fault:
    """The `FAULT_FILE` hook: fail the transactions that write one step in one state."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def check(self, requests: Sequence[Request]) -> None:
        """Raise inside the transaction if ``requests`` write the step the file names."""
        wanted = self._wanted()
        if wanted is None:
            return
        for request in requests:
            for snapshot in request[0]:
                if (snapshot[0], snapshot[1], snapshot[3]) == wanted:
                    raise RuntimeError(f"injected fault: step {wanted[1]} {wanted[2]}")

    def spent(self) -> None:
        """The batch carrying the fault failed on its own: the fault is over."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def _wanted(self) -> tuple[str, int, str] | None:
        if self.path is None:
            return None
        try:
            with open(self.path) as source:
                data = json.load(source)
        except (FileNotFoundError, ValueError):
            return None
        return str(data["plan"]), int(data["step"]), str(data["state"])


def _die_if_asked_at_start() -> None:
    """Kill this process if a token is left in the `EXIT_AT_START` directory (fault tests)."""
    folder = os.environ.get(EXIT_AT_START)
    if not folder:
        return
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(folder)):
            with contextlib.suppress(FileNotFoundError):  # taken by another child
                os.remove(os.path.join(folder, name))
                os.kill(os.getpid(), signal.SIGKILL)


class _Child:
    """The writer process's side: commits groups of batches and answers each batch."""

    def __init__(
        self,
        storage: Any,
        ledger: _Ledger,
        batches: _MessageReader,
        stdout: IO[bytes],
        fatal_timeout: float,
    ) -> None:
        self.storage = storage
        self.ledger = ledger
        self.batches = batches
        self.stdout = stdout
        self.fatal_timeout = fatal_timeout
        self.pacer = _Pacer()
        self.exit_after = int(os.environ.get(EXIT_AFTER_COMMITS) or 0)
        self.fault = _Fault(os.environ.get(FAULT_FILE))

    def answer_group(self, first: bytes) -> list[bytes]:
        """Commit ``first`` and the batches waiting behind it (as many as `_Pacer` allows)
        in one transaction; return each batch's reply."""
        ledger = self.ledger
        group = [first]
        budget = self.pacer.budget() - _requests_in(first)
        group.extend(self.batches.waiting(GROUP_LIMIT - 1, budget, _requests_in))
        started = time.perf_counter()
        numbered = [(_NUMBER.unpack_from(data)[0], data) for data in group]
        fresh = [(number, data) for number, data in numbered if not ledger.holds(number)]
        answers_of: dict[int, _Answer] = {}
        transactions = 0
        if fresh:
            numbers = [number for number, _ in fresh]
            requests = [pickle.loads(memoryview(data)[_NUMBER.size :]) for _, data in fresh]
            answers, transactions, clean = self.commit_group(requests, numbers)
            answers_of = dict(zip(numbers, answers, strict=True))
            if clean:  # one transaction, first attempt: a measure of the usual costs
                self.pacer.observe(
                    sum(map(len, requests)),
                    work=ledger.written_at - started,
                    commit=time.perf_counter() - ledger.written_at,
                )
            if self.exit_after and ledger.commits >= self.exit_after:
                os._exit(EXIT_AFTER_COMMITS_STATUS)  # fault tests: committed, not answered
        answers = [answers_of.get(number) or ledger.answer(number) for number, _ in numbered]
        ledger.answered([number for number, _ in numbered])
        busy = time.perf_counter() - started
        replies = []
        for index, (refused, error, fatal) in enumerate(answers, 1):
            last = index == len(answers)
            reply = (
                *(_ANSWER, sorted(refused), error, fatal),
                *(busy if last else 0.0, transactions if last else 0),
            )
            replies.append(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
        return replies

    def commit_group(
        self, batches: list[list[Request]], numbers: list[int]
    ) -> tuple[list[_Answer], int, bool]:
        """Commit ``batches`` in one transaction; return each one's answer, the transactions
        and whether it was one, committed at its first attempt.

        If that fails for a reason other than a passing one (retried until the fatal
        timeout), each batch is committed on its own, so that one bad change fails only its
        own batch, as if it had come alone. Each transaction also records its answers in the
        ledger.
        """
        ledger = self.ledger
        deadline = time.monotonic() + self.fatal_timeout
        requests = [request for batch in batches for request in batch]
        sizes = [len(batch) for batch in batches]
        outcome = self.commit(requests, ledger.recorder(numbers, sizes), deadline)
        if outcome.error is None or outcome.fatal or len(batches) == 1:
            if outcome.error is not None and not outcome.fatal:
                self.fault.spent()
            answers = [
                (mine, outcome.error, outcome.fatal) for mine in _split(outcome.refused, sizes)
            ]
            return answers, 1, outcome.error is None and not outcome.retried
        answers = []
        for number, batch in zip(numbers, batches, strict=True):
            alone = self.commit(batch, ledger.recorder([number], [len(batch)]), deadline)
            if alone.error is not None and not alone.fatal:
                self.fault.spent()
            answers.append((alone.refused, alone.error, alone.fatal))
        return answers, 1 + len(batches), False

    def commit(
        self, requests: list[Request], recorder: Callable[[set[int]], None], deadline: float
    ) -> _Outcome:
        """`_commit` ``requests`` with the ledger's ``recorder``; take in a success."""

        def record(refused: set[int]) -> None:
            self.fault.check(requests)
            recorder(refused)

        outcome = _commit(
            self.storage,
            requests,
            record,
            deadline=deadline,
            notice=self.notify,
            landed=self.ledger.landed,
        )
        if outcome.error is None:
            self.ledger.committed()
        return outcome

    def notify(self, failures: int, seconds: float, cause: str) -> None:
        """Tell the world that a transaction is being retried (it logs a warning)."""
        notice = (_RETRYING, failures, seconds, cause)
        with contextlib.suppress(OSError):  # the world is gone: the watcher ends this process
            _send(self.stdout, pickle.dumps(notice, pickle.HIGHEST_PROTOCOL))


def _requests_in(message: bytes) -> int:
    """Return how many requests the batch ``message`` holds (from its header)."""
    return int(_NUMBER.unpack_from(message)[1])


class _Pacer:
    """How many requests the next transaction may take.

    Two costs pull apart. Each transaction pays a commit (an fsync: fixed, whatever its
    size), so bigger groups pay it less often. But every sender in a group waits for the
    whole group to be written: a group of the whole world's pending changes (in W1, the next
    step of ~150 plans at once) leaves the world idle while the writer writes it, and the
    writer idle while the world prepares the next one; smaller groups keep both busy (the
    world runs the steps of the first group while the writer writes the second). The pacer
    takes the middle: a transaction holds about as many requests as the writer handles in
    the time of `COMMITS` commits, so the commit is at most a fifth of a transaction's time
    and a sender waits for the others in its group no longer than a few commits would take.
    On this project's VMs (commits of ~0.5 ms, ~50 us a request while the world is busy)
    that is the minimum, 16-40 requests; on a disk whose fsync takes 10 ms, hundreds. Both
    costs are running averages of what the child measures. (W1 on this VM, 18 interleaved
    runs each: 1.33x -> 1.48x the one-commit floor; W2, one plan's 1,000 steps at once,
    which gains nothing from early answers, 0.111 -> 0.118 s.)
    """

    COMMITS = 4  # a transaction's writing takes about this many commits' time
    WEIGHT = 0.2  # of the newest measurement in the running averages

    def __init__(self) -> None:
        self.commit_s = 0.0  # one commit
        self.request_s = 0.0  # writing one request (decode, encode, SQL)

    def budget(self) -> int:
        """Return the requests the next transaction may take."""
        if self.request_s <= 0.0:
            return GROUP_REQUESTS_MAX  # nothing measured yet
        fits = int(self.COMMITS * self.commit_s / self.request_s)
        return max(GROUP_REQUESTS_MIN, min(GROUP_REQUESTS_MAX, fits))

    def observe(self, requests: int, work: float, commit: float) -> None:
        """Take in a transaction of ``requests``: ``work`` seconds writing, ``commit``
        seconds committing."""
        if requests <= 0:
            return
        per_request = max(work, 0.0) / requests
        if self.request_s <= 0.0:
            self.commit_s, self.request_s = commit, per_request
            return
        weight = self.WEIGHT
        self.commit_s += weight * (commit - self.commit_s)
        self.request_s += weight * (per_request - self.request_s)


def _split(refused: set[int], sizes: list[int]) -> list[set[int]]:
    """Split the refused indexes of a group's requests into each batch's own."""
    mine, first = [], 0
    for size in sizes:
        end = first + size
        mine.append({i - first for i in refused if first <= i < end})
        first = end
    return mine


class _Ledger:
    """Which batches are done, stored in every transaction, for the writer's successor.

    A child can die after a transaction commits and before its replies reach the world;
    the world then sends the unanswered batches again, to the next child. Writing them a
    second time would not be harmless: a claim would be refused by its own first write (the
    plan is already running) and an ``envelope_pop`` would drop one more stored event. So
    every transaction also writes a coordinator record (class `LEDGER`, id the writer's
    key): the batches done so far (every number up to a mark, and any above it: when a
    group's transaction fails and its batches are committed one by one, a failed one stays
    out) and the refused claims of the batches the current group committed. A new child
    reads it once: a batch it holds is answered from it, not written again; any other is
    written (a failed one fails again). Only the current group's batches can come back (a
    child writes a group's replies before it reads the next), so those are the only answers
    it keeps. A clean close deletes it.

    The same record settles an attempt whose outcome was lost with its connection (during
    its ``COMMIT``): if the record holds what that attempt wrote, it committed (`landed`).
    """

    def __init__(self, storage: Any, key: str, owner: str | None = None) -> None:
        self.storage = storage
        self.key = key
        self.owner = owner  # the world's id: a dead world's record can be found by it
        self.commits = 0  # transactions recorded by this child
        self.written_at = 0.0  # when the last transaction was recorded, just before its commit
        self.up_to = 0  # every batch numbered up to this one is done
        self.above: set[int] = set()  # and these, numbered higher
        self.refused: dict[int, set[int]] = {}  # a predecessor's last group's answers
        self.group_done: set[int] = set()  # committed in the current group so far
        self.group_refused: dict[int, set[int]] = {}
        self._candidate: tuple[set[int], dict[int, set[int]]] = (set(), {})
        # What the last attempt not known to have committed wrote, and its refused claims.
        self._written: tuple[bytes, set[int]] | None = None
        data = storage.record(LEDGER, key)
        if data is not None:  # JSON written by `recorder`; never unpickled
            up_to, above, refused = json.loads(data)
            self.up_to, self.above = int(up_to), {int(number) for number in above}
            self.refused = {int(number): set(indexes) for number, indexes in refused.items()}

    def holds(self, number: int) -> bool:
        """Return whether batch ``number`` was committed (by a predecessor)."""
        return number <= self.up_to or number in self.above

    def answer(self, number: int) -> _Answer:
        """Return the answer a predecessor committed for batch ``number``."""
        return set(self.refused.get(number, ())), None, False

    def recorder(self, numbers: list[int], sizes: list[int]) -> Callable[[set[int]], None]:
        """Return the hook that records a transaction of these batches, inside it."""

        def record(refused: set[int]) -> None:
            mine = dict(zip(numbers, _split(refused, sizes), strict=True))
            done = self.group_done | set(numbers)
            answers = {**self.group_refused, **{n: r for n, r in mine.items() if r}}
            up_to, above = _advance(self.up_to, self.above, done)
            stored = {str(number): sorted(indexes) for number, indexes in answers.items()}
            data = json.dumps([up_to, sorted(above), stored]).encode()
            self._written = None  # not sure of the earlier attempt's any more
            self.storage.put_record_data(LEDGER, self.key, data, owner_id=self.owner)
            self._written = (data, set(refused))
            self._candidate = (done, answers)
            self.commits += 1
            self.written_at = time.perf_counter()

        return record

    def landed(self) -> set[int] | None:
        """Return the refused claims of the attempt recorded last if it committed after all
        (the record holds what it wrote; no later one can, batch numbers only grow), else
        None. Reads the record."""
        if self._written is None:
            return None
        data, refused = self._written
        return set(refused) if self.storage.record(LEDGER, self.key) == data else None

    def committed(self) -> None:
        """Take in that the transaction recorded last has committed."""
        self.group_done, self.group_refused = self._candidate
        self._written = None

    def answered(self, numbers: list[int]) -> None:
        """Take in that the current group's batches (committed or failed) are answered."""
        self.up_to, self.above = _advance(self.up_to, self.above, numbers)
        self.group_done, self.group_refused = set(), {}
        self._written = None

    def forget(self) -> None:
        """Delete the record (a clean close: nothing can come back)."""
        with contextlib.suppress(Exception):  # a leftover record is small and harmless
            self.storage.delete_record(LEDGER, self.key)


def _advance(up_to: int, above: set[int], numbers: Iterable[int]) -> tuple[int, set[int]]:
    """Return the mark and the numbers above it once ``numbers`` are done too."""
    above = above | {number for number in numbers if number > up_to}
    while up_to + 1 in above:
        up_to += 1
        above.discard(up_to)
    return up_to, above


class _MessageReader:
    """Length-prefixed messages from a pipe, with a way to take those already waiting.

    Reads the file descriptor itself: a buffered reader could hold a whole waiting batch
    in its buffer where ``select`` does not see it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        self.held: bytes | None = None  # taken, but did not fit in the last `waiting`

    def next(self) -> bytes:
        """Return the next message, waiting for it; raise `EOFError` at the end."""
        while True:
            message = self._take()
            if message is not None:
                return message
            if self.eof or not self._fill():
                raise EOFError("the pipe was closed")

    def waiting(
        self, limit: int, budget: int = sys.maxsize, weight: Callable[[bytes], int] = len
    ) -> list[bytes]:
        """Return up to ``limit`` messages that have fully arrived, without waiting, while
        their total ``weight`` fits in ``budget`` (the first that does not stays first)."""
        messages: list[bytes] = []
        while len(messages) < limit:
            message = self._take()
            if message is not None:
                cost = weight(message)
                if cost > budget:
                    self.held = message
                    break
                budget -= cost
                messages.append(message)
            elif self.eof or not select.select([self.fd], [], [], 0)[0] or not self._fill():
                break
        return messages

    def _fill(self) -> bool:
        chunk = os.read(self.fd, PIPE_SIZE)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _take(self) -> bytes | None:
        if self.held is not None:
            message, self.held = self.held, None
            return message
        buffer = self.buffer
        if len(buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        end = _HEADER.size + size
        if len(buffer) < end:
            return None
        message = bytes(buffer[_HEADER.size : end])
        del buffer[:end]
        return message


def _exit_with_parent(fd: int, working: threading.Lock, ledger: _Ledger) -> None:
    """Exit at once when the world's end of the input pipe closes (a close, or its death).

    Without this, a child busy with a transaction when its world is killed would commit it
    a few milliseconds later, after the world is gone: a world started again on the database
    could already be recovering it. Killed here, an unfinished transaction rolls back (a
    commit that already reached the disk stays, as after any crash). On a normal close the
    last batch was acknowledged before the pipe closed, so nothing is lost either way.

    If no group is being committed (``working`` is free: every batch read was answered, or
    its replies are on their way), nothing can be sent again and the ledger's record is
    deleted first; a child stopped in the middle of a group leaves it behind (one small row).
    """
    watcher = select.poll()
    watcher.register(fd, 0)  # POLLHUP and POLLERR are reported whatever the mask
    while True:
        for _, events in watcher.poll():
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                if working.acquire(blocking=False):  # held until the exit: no group starts
                    ledger.forget()
                os._exit(0)


def _send(pipe: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed message (see `_send_all`)."""
    _send_all(pipe, [payload])


def _send_all(pipe: IO[bytes], payloads: list[bytes]) -> None:
    """Write length-prefixed messages with as few system calls as the pipe allows.

    Each call releases the GIL, and in the world's busy process taking it back can take
    milliseconds: through a 64 KiB pipe a 100 KiB batch cost several of those waits (in W1,
    a sixth of the persistence thread's time). Hence one ``writev`` and a pipe enlarged to
    hold a whole batch (`_enlarge_pipe`).
    """
    pipe.flush()  # nothing buffered may come after what is written directly
    fd = pipe.fileno()
    chunks: list[bytes] = []
    for payload in payloads:
        chunks += (_HEADER.pack(len(payload)), payload)
    while chunks:
        written = os.writev(fd, chunks[:1024])  # IOV_MAX
        while chunks and written >= len(chunks[0]):
            written -= len(chunks[0])
            chunks.pop(0)
        if chunks and written:
            chunks[0] = chunks[0][written:]


PIPE_SIZE = 1 << 20  # bytes: above W1's largest batch (about 250 KiB)


def _enlarge_pipe(pipe: IO[bytes]) -> None:
    """Make ``pipe`` hold up to `PIPE_SIZE` bytes (Linux; elsewhere, or if refused, as is)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        limit = PIPE_SIZE
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), setsize, min(PIPE_SIZE, limit))


def _receive(pipe: IO[bytes]) -> bytes:
    header = pipe.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the pipe was closed")
    (size,) = _HEADER.unpack(header)
    payload = pipe.read(size)
    if len(payload) < size:
        raise EOFError("the pipe was closed mid-message")
    return payload


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PersistenceError) else f"{type(exc).__name__}: {exc}"
