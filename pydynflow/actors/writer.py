"""Where the persistence actor's transactions run: a writer process, or the actor's own thread.

The persistence actor stays the only writer of a world; a *writer* is the part of it that
holds the write connection and turns a batch of snapshots into one transaction.

`ProcessWriter` (SQLite files and PostgreSQL, the default): the connection lives in a child
process, a fresh interpreter importing only the storage layer (not a fork of this
multi-threaded process, and the user's ``__main__`` is never imported there). Why: Python's
sqlite3 and psycopg2 release the GIL around every statement and every commit, and a thread
getting the GIL back waits up to the switch interval (5 ms) whenever another thread is
running Python code. In the world's process the dispatchers, the workers and the callers
planning new plans always are, so the persistence thread waited for the GIL most of the
time: in W1 it spent 0.98 s in its transactions for 0.31 s of CPU (88 rows took 1 ms in a
quiet process, 665 ms next to one busy thread). In its own process the writer has a GIL to
itself and a core of its own, and the persistence actor waits for one reply per commit.
The child commits before it replies, so a change is acknowledged only once it is durable,
as before.

Supervision: if the child dies (killed, crashed), the batch in flight fails with a
`PersistenceError` (the persistence actor retries it) and the next write starts a new
child. When the world's process dies, its end of the pipe closes and the child exits at
once, even inside a transaction (which then rolls back, as after any crash; nothing
half-written is left), so nothing is committed after the world is gone.

`ThreadWriter` (in-memory SQLite, whose database no other process can open, or a `Storage`
built on a peewee database object): the transaction runs on the persistence actor's thread.
``PYDYNFLOW_PERSISTENCE=thread`` forces it for any database.

Batches cross the pipe as pickles of plain tuples made by this module (never anything read
from the database).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pydynflow.errors import PersistenceError
from pydynflow.storage.store import redact_url

# One change set as it crosses to the writer: step, action and plan snapshots, claim
# ((plan_id, from_states) or None), chunks, envelope_add, envelope_pop, envelope_clear.
Request = tuple[Any, ...]

_HEADER = struct.Struct("!I")
# The child imports the storage layer only: a bare `pydynflow` package object stands in for
# the real one, whose __init__ would import the whole engine (0.5 s instead of 0.2 s).
_BOOTSTRAP = """\
import sys, types
package = types.ModuleType("pydynflow")
package.__path__ = [sys.argv[1] + "/pydynflow"]
sys.modules["pydynflow"] = package
from pydynflow.actors.writer import main
main(sys.argv[2])
"""
_READY = b"pydynflow-writer-ready"
START_TIMEOUT = 60.0  # seconds for a new writer process to import and open the database


def write_requests(storage: Any, requests: Sequence[Request]) -> set[int]:
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
            for plan_id, step_id, payload in envelope_add:
                storage.add_envelope(plan_id, step_id, payload)
            for plan_id, step_id in envelope_pop:
                storage.pop_envelope(plan_id, step_id)
            for plan_id, step_id in envelope_clear:
                storage.clear_envelopes(plan_id, step_id)
    return refused


class ThreadWriter:
    """Write batches on the calling thread (the persistence actor's own)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def write(self, requests: Sequence[Request]) -> set[int]:
        """Commit ``requests`` in one transaction; return the indexes of refused claims."""
        return write_requests(self.storage, requests)

    def wait_ready(self) -> None:
        """Ready at once: the storage is open."""

    def close(self) -> None:
        """Nothing to release: the storage belongs to the world."""


class ProcessWriter:
    """Write batches in a supervised child process that owns the write connection.

    Used by one thread at a time (the persistence actor's). `wait_ready` waits for the
    child to have opened the database (about 0.2 s: it imports the storage layer); the
    first write waits for it otherwise.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.restarts = 0
        self.busy_seconds = 0.0  # spent by children on transactions (decode, encode, SQL, commit)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._lock = threading.Lock()  # close() may come from another thread than write()
        self._start()

    def write(self, requests: Sequence[Request]) -> set[int]:
        """Commit ``requests`` in the child; return the indexes of refused claims.

        Raises:
            PersistenceError: the transaction failed, or the child died before replying
                (then the next call starts a new child).
        """
        with self._lock:
            # returncode, not poll(): a system call per commit would hand the GIL away and
            # wait to get it back. A child that died is found by the pipe failing (then
            # reaped by _death, which sets returncode) and replaced on the retry.
            if self._proc is None or self._proc.returncode is not None:
                if self._proc is not None:
                    self.restarts += 1
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            if not self._ready:
                self._await_ready(proc)
            try:
                _send(proc.stdin, pickle.dumps(list(requests), pickle.HIGHEST_PROTOCOL))
                reply = _receive(proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                raise PersistenceError(self._death(exc)) from exc
        refused, error, busy = pickle.loads(reply)  # our own child's reply, not database data
        self.busy_seconds += busy
        if error is not None:
            raise PersistenceError(error)
        return set(refused)

    def wait_ready(self) -> None:
        """Wait until the child has opened the database.

        Raises:
            PersistenceError: it could not (the message says why).
        """
        with self._lock:
            if self._proc is not None and not self._ready:
                self._await_ready(self._proc)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child after the batch in hand; idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            ready = self._ready
        if proc is None:
            return
        if not ready:  # it never got a batch: nothing of ours can be in flight
            timeout = 0.0
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # end of input: the child exits
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    @property
    def pid(self) -> int | None:
        """Return the child's process id (None once closed)."""
        proc = self._proc
        return None if proc is None else proc.pid

    def _start(self) -> None:
        """Start a child; it is waited for (`_await_ready`) by the first write."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, root, self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        _enlarge_pipe(self._proc.stdin)
        self._ready = False

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> None:
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
            raise PersistenceError(ready.decode("utf-8", "replace"))
        self._ready = True

    def _death(self, exc: BaseException) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        if code is not None and code < 0:
            how = f"killed by signal {signal.Signals(-code).name} ({-code})"
        else:
            how = f"exited with code {code}"
        return (
            f"the writer process ({redact_url(self.url)}) {how} during a commit "
            f"({type(exc).__name__}); the commit is retried in a new one"
        )


def writer_for(storage: Any) -> ThreadWriter | ProcessWriter:
    """Return the writer for ``storage``: a process for files and servers, else a thread."""
    url = getattr(storage, "url", None)
    in_thread = os.environ.get("PYDYNFLOW_PERSISTENCE", "").lower() == "thread"
    if in_thread or url is None or storage.in_memory:
        return ThreadWriter(storage)
    return ProcessWriter(url)


# -- the child process ---------------------------------------------------------------------


def main(url: str) -> None:
    """Run the writer loop on stdin/stdout: open the database at ``url``, commit what arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    try:
        from pydynflow.storage.store import Storage

        storage = Storage(url, migrate=False)
        storage.count_plans(state="running")  # connects now and finds the schema, or fails
    except BaseException as exc:
        _send(stdout, f"the writer process could not open the database: {exc}".encode())
        return
    _send(stdout, _READY)
    threading.Thread(target=_exit_with_parent, args=(stdin.fileno(),), daemon=True).start()
    try:
        while True:
            try:
                data = _receive(stdin)
            except EOFError:
                return
            started = time.perf_counter()
            try:
                refused, error = sorted(write_requests(storage, pickle.loads(data))), None
            except Exception as exc:
                refused, error = [], _describe(exc)
            reply = (refused, error, time.perf_counter() - started)
            _send(stdout, pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
    finally:
        storage.close()


def _exit_with_parent(fd: int) -> None:
    """Exit at once when the world's end of the input pipe closes (its process died).

    Without this, a child busy with a transaction when its world is killed would commit it
    a few milliseconds later, after the world is gone: a world started again on the database
    could already be recovering it. Killed here, an unfinished transaction rolls back (a
    commit that already reached the disk stays, as after any crash). On a normal close the
    last batch was acknowledged before the pipe closed, so nothing is lost either way.
    """
    watcher = select.poll()
    watcher.register(fd, 0)  # POLLHUP and POLLERR are reported whatever the mask
    while True:
        for _, events in watcher.poll():
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)


def _send(pipe: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed message with as few system calls as the pipe allows.

    Each call releases the GIL, and in the world's busy process taking it back can take
    milliseconds: through a 64 KiB pipe a 100 KiB batch cost several of those waits (in W1,
    a sixth of the persistence thread's time). Hence one ``writev`` and a pipe enlarged to
    hold a whole batch (`_enlarge_pipe`).
    """
    pipe.flush()  # nothing buffered may come after what is written directly
    fd = pipe.fileno()
    chunks = [_HEADER.pack(len(payload)), payload]
    while chunks:
        written = os.writev(fd, chunks)
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
