"""The pipes between a world and its writer process: length-prefixed messages and batches.

The world writes batches: a header (the batch's number and how many change sets it holds),
then the change sets pickled as plain tuples. Pickling a named tuple costs a reduce call and
a class reference per tuple, and the pipe carries one change set per state change, so the
named types (`ChangeSet` and the snapshots in it) are taken apart here and put together
again in the writer process (`dumps_requests`, `loads_requests`). The writer process answers
each batch, in order, or sends a notice that a transaction is being retried. Nothing read
from the database is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from pydynflow.storage.rows import make_action_snapshot, make_plan_snapshot, make_step_snapshot
from pydynflow.storage.writer.changes import ChangeSet, make_change_set
from pydynflow.wire import plain as wire

__all__ = [
    "ANSWER",
    "PIPE_SIZE",
    "READY",
    "RETRYING",
    "MessageReader",
    "dumps_requests",
    "enlarge_pipe",
    "loads_requests",
    "number_of",
    "numbered",
    "receive",
    "requests_in",
    "send",
    "send_all",
]

_HEADER = struct.Struct("!I")  # a message's length, ahead of it
_NUMBER = struct.Struct("!QI")  # a batch's number and request count, ahead of its pickle
PIPE_SIZE = 1 << 20
"""Bytes a pipe to the writer process holds (`enlarge_pipe`): more than a large batch."""
READY = b"pydynflow-writer-ready"
"""The writer process's first message once it has opened the database (else: why not)."""
ANSWER, RETRYING = 0, 1
"""The kinds of the writer process's messages: a batch's answer, a retried transaction."""


def dumps_requests(requests: Sequence[ChangeSet]) -> bytes:
    """Return the pickle of a batch's change sets, as plain tuples (see the module)."""
    # Inline, with one snapshot (the usual) as a case of its own: this runs once per state
    # change, on the world's busy threads.
    plain = [
        (
            ((*steps[0],),) if len(steps) == 1 else tuple(map(tuple, steps)),
            () if not actions else ((*actions[0],),) if len(actions) == 1 else _plain(actions),
            _plain(plans) if plans else (),
            claim,
            chunks,
            envelope_add,
            envelope_pop,
            envelope_clear,
            records_delete,
            posts,
        )
        for (
            steps,
            actions,
            plans,
            claim,
            chunks,
            envelope_add,
            envelope_pop,
            envelope_clear,
            records_delete,
            posts,
        ) in requests
    ]
    return wire.dumps(plain)


def numbered(number: int, count: int, pickled: bytes) -> bytes:
    """Return batch ``number`` of ``count`` change sets (`dumps_requests`) as a message."""
    return _NUMBER.pack(number, count) + pickled


def number_of(message: bytes) -> int:
    """Return the number of the batch ``message`` (from its header)."""
    return int(_NUMBER.unpack_from(message)[0])


def requests_in(message: bytes) -> int:
    """Return how many change sets the batch ``message`` holds (from its header)."""
    return int(_NUMBER.unpack_from(message)[1])


def loads_requests(message: bytes) -> list[ChangeSet]:
    """Return the change sets of the batch ``message``, named again."""
    return [_named(values) for values in wire.loads(memoryview(message)[_NUMBER.size :])]


def _plain(snapshots: Sequence[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(map(tuple, snapshots))


def _named(values: tuple[Any, ...]) -> ChangeSet:
    (
        steps,
        actions,
        plans,
        claim,
        chunks,
        envelope_add,
        envelope_pop,
        envelope_clear,
        records_delete,
        posts,
    ) = values
    return make_change_set(
        (
            tuple(map(make_step_snapshot, steps)) if steps else (),
            tuple(map(make_action_snapshot, actions)) if actions else (),
            tuple(map(make_plan_snapshot, plans)) if plans else (),
            claim,
            chunks,
            envelope_add,
            envelope_pop,
            envelope_clear,
            records_delete,
            posts,
        )
    )


class MessageReader:
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


def send(pipe: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed message (see `send_all`)."""
    send_all(pipe, [payload])


def send_all(pipe: IO[bytes], payloads: list[bytes]) -> None:
    """Write length-prefixed messages with as few system calls as the pipe allows.

    Each call releases the GIL, and in the world's busy process taking it back can take
    milliseconds (up to the switch interval); hence one ``writev``, into a pipe enlarged to
    hold a whole batch (`enlarge_pipe`).
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


def enlarge_pipe(pipe: IO[bytes]) -> None:
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


def receive(pipe: IO[bytes]) -> bytes:
    """Read one length-prefixed message; raise `EOFError` if the pipe closes first."""
    header = pipe.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the pipe was closed")
    (size,) = _HEADER.unpack(header)
    payload = pipe.read(size)
    if len(payload) < size:
        raise EOFError("the pipe was closed mid-message")
    return payload
