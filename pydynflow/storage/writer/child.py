"""The writer process: it opens the database, then commits the batches its world sends.

It is a fresh interpreter that imports only the storage layer (`BOOTSTRAP`: a bare
``pydynflow`` package object stands in for the real one, whose ``__init__`` would import the
whole engine); the user's ``__main__`` is never imported there. It takes the batches waiting
in its pipe (as many as `Pacer` allows) into one transaction, then answers each, in order.
It exits at once when its world's end of the pipe closes, even inside a transaction (which
then rolls back), so nothing is committed after the world is gone. Fault hooks for tests,
read when it starts: `EXIT_AFTER_COMMITS`, `EXIT_AT_START` and `FAULT_FILE`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

from pydynflow.storage.store import Storage
from pydynflow.storage.writer.changes import ChangeSet
from pydynflow.storage.writer.commit import FATAL_TIMEOUT, Outcome, commit_until
from pydynflow.storage.writer.ledger import Answer, Ledger, split_refused
from pydynflow.storage.writer.pacer import Pacer
from pydynflow.storage.writer.pipe import (
    ANSWER,
    READY,
    RETRYING,
    MessageReader,
    loads_requests,
    number_of,
    requests_in,
    send,
    send_all,
)
from pydynflow.wire import plain

__all__ = [
    "BOOTSTRAP",
    "EXIT_AFTER_COMMITS",
    "EXIT_AFTER_COMMITS_STATUS",
    "EXIT_AT_START",
    "FAULT_FILE",
    "GROUP_LIMIT",
    "main",
]

BOOTSTRAP = """\
import sys, types
package = types.ModuleType("pydynflow")
package.__path__ = [sys.argv[1] + "/pydynflow"]
sys.modules["pydynflow"] = package
from pydynflow.storage.writer.child import main
main(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
"""
"""The writer process's program (``python -c``); its arguments: the directory holding the
``pydynflow`` package, the database URL, the ledger's key, its owner, the fatal timeout."""
GROUP_LIMIT = 256
"""Batches the writer process commits together at most."""
EXIT_AFTER_COMMITS = "PYDYNFLOW_WRITER_EXIT_AFTER_COMMITS"
"""For fault tests: the writer process exits right after its N-th transaction commits,
before it replies (the window its `Ledger` covers), with `EXIT_AFTER_COMMITS_STATUS`."""
EXIT_AFTER_COMMITS_STATUS = 75
"""The exit status of `EXIT_AFTER_COMMITS`."""
EXIT_AT_START = "PYDYNFLOW_WRITER_EXIT_AT_START"
"""For fault tests: a directory of token files. A writer process that finds one there when
it has opened the database, before it says it is ready, deletes it and kills itself
(SIGKILL): each token kills one process."""
FAULT_FILE = "PYDYNFLOW_WRITER_FAULT_FILE"
"""For fault tests: a JSON file ``{"plan": id, "step": n, "state": s}``; while it exists, a
transaction writing that step in that state fails (not a passing failure), and once the
batch carrying it has failed on its own the file is deleted: one failed commit."""


def main(url: str, key: str, owner: str = "", fatal_timeout: float = FATAL_TIMEOUT) -> None:
    """Run the writer loop on stdin/stdout: open the database at ``url``, commit what arrives.

    The batches waiting in the pipe go into one transaction (as many as `Pacer` allows, up
    to `GROUP_LIMIT`); each batch gets its own reply, in order, once that transaction is
    committed. ``key`` names the writer's `Ledger`: batches a dead predecessor committed
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
        storage = Storage(url, migrate=False)
        ledger = Ledger(storage, key, owner or None)  # connects now, finds the schema, or fails
    except BaseException as exc:
        send(stdout, f"the writer process could not open the database: {exc}".encode())
        return
    _die_if_asked_at_start()
    send(stdout, READY)
    working = threading.Lock()  # held while a group is being committed and answered
    watcher = threading.Thread(
        target=_exit_with_parent, args=(stdin_fd, working, ledger), daemon=True
    )
    watcher.start()
    child = Child(storage, ledger, MessageReader(stdin_fd), stdout, fatal_timeout)
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
            send_all(stdout, replies)
    finally:
        storage.close()


class Fault:
    """The `FAULT_FILE` hook: fail the transactions that write one step in one state."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def check(self, requests: Sequence[ChangeSet]) -> None:
        """Raise inside the transaction if ``requests`` write the step the file names."""
        wanted = self._wanted()
        if wanted is None:
            return
        for request in requests:
            for step in request.steps:
                if (step.plan_id, step.step_id, step.state) == wanted:
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


class Child:
    """The writer process's side: commits groups of batches and answers each batch."""

    def __init__(
        self,
        storage: Storage,
        ledger: Ledger,
        batches: MessageReader,
        stdout: IO[bytes],
        fatal_timeout: float,
    ) -> None:
        self.storage = storage
        self.ledger = ledger
        self.batches = batches
        self.stdout = stdout
        self.fatal_timeout = fatal_timeout
        self.pacer = Pacer()
        self.exit_after = int(os.environ.get(EXIT_AFTER_COMMITS) or 0)
        self.fault = Fault(os.environ.get(FAULT_FILE))

    def answer_group(self, first: bytes) -> list[bytes]:
        """Commit ``first`` and the batches waiting behind it (as many as `Pacer` allows)
        in one transaction; return each batch's reply."""
        ledger = self.ledger
        group = [first]
        budget = self.pacer.budget() - requests_in(first)
        group.extend(self.batches.waiting(GROUP_LIMIT - 1, budget, requests_in))
        started = time.perf_counter()
        arrived = [(number_of(data), data) for data in group]
        fresh = [(number, data) for number, data in arrived if not ledger.holds(number)]
        answers_of: dict[int, Answer] = {}
        transactions = 0
        if fresh:
            numbers = [number for number, _ in fresh]
            requests = [loads_requests(data) for _, data in fresh]
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
        answers = [answers_of.get(number) or ledger.answer(number) for number, _ in arrived]
        ledger.answered([number for number, _ in arrived])
        busy = time.perf_counter() - started
        replies = []
        for index, (refused, error, fatal) in enumerate(answers, 1):
            last = index == len(answers)
            reply = (
                *(ANSWER, sorted(refused), error, fatal),
                *(busy if last else 0.0, transactions if last else 0),
            )
            replies.append(plain.dumps(reply))
        return replies

    def commit_group(
        self, batches: list[list[ChangeSet]], numbers: list[int]
    ) -> tuple[list[Answer], int, bool]:
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
                (mine, outcome.error, outcome.fatal)
                for mine in split_refused(outcome.refused, sizes)
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
        self, requests: list[ChangeSet], recorder: Callable[[set[int]], None], deadline: float
    ) -> Outcome:
        """`commit_until` ``requests`` with the ledger's ``recorder``; take in a success."""

        def record(refused: set[int]) -> None:
            self.fault.check(requests)
            recorder(refused)

        outcome = commit_until(
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
        notice = (RETRYING, failures, seconds, cause)
        with contextlib.suppress(OSError):  # the world is gone: the watcher ends this process
            send(self.stdout, plain.dumps(notice))


def _exit_with_parent(fd: int, working: threading.Lock, ledger: Ledger) -> None:
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
