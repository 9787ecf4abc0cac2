"""`PersistenceActor`: the only writer to the store, committing changes in groups.

Every state change travels here as a `Persist` message of immutable snapshots. The actor
gathers whatever arrived since its last turn and hands it to its *writer*
(`pydynflow.storage.writer`) in batches; the writer commits batches in groups (all those
waiting when a transaction starts go into it) and, once a batch is committed, the actor's
acknowledgement calls each message's ``on_commit``, which replies to the sender. The commit
is what makes a step count as done. With SQLite in WAL mode and ``synchronous=FULL`` (the
default), a committed change survives a killed process and a power loss.

The actor runs on a one-thread dispatcher of its own: handing a batch over writes to a
pipe (or, with the in-thread writer, commits), and the shared dispatcher's threads must
never block. The writer is a child process owning the write connection for SQLite files and
PostgreSQL (acknowledgements then come from its reply thread), the actor's own thread for an
in-memory database.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydynflow.actors.messages import Claim, Flush, Persist
from pydynflow.actors.pooled import Dispatcher, PooledActor, tell
from pydynflow.adapters import telemetry
from pydynflow.errors import PersistenceError
from pydynflow.hooks import HookCalls, take_hook_calls
from pydynflow.logging import get_logger
from pydynflow.mixins.singleton import releases_singleton_locks, singleton_classes
from pydynflow.plan import ActionRecord, ExecutionPlan, Step
from pydynflow.promise import Promise
from pydynflow.states import PlanState
from pydynflow.storage import Storage
from pydynflow.storage.rows import row_steps
from pydynflow.storage.singleton_lock import release_requests
from pydynflow.storage.writer import FATAL_TIMEOUT, ChangeSet, ThreadWriter, Writer, writer_for
from pydynflow.storage.writer.changes import make_change_set

BATCH_LIMIT = 32  # messages per batch handed to the writer


def changes(
    storage: Storage,
    *,
    plan: ExecutionPlan | None = None,
    new: bool = False,
    steps: Iterable[Step] = (),
    actions: Iterable[ActionRecord] = (),
    claim: Claim | None = None,
    on_commit: Any = None,
    chunks: Iterable[tuple[Any, ...]] = (),
    envelope_add: tuple[tuple[Any, ...], ...] = (),
    envelope_pop: tuple[tuple[str, int], ...] = (),
    envelope_clear: tuple[tuple[str, int], ...] = (),
    posts: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> Persist:
    """Snapshot a plan row, steps and actions now into a `Persist` message.

    Snapshots are cheap and unaffected by later changes; the writer encodes them. ``new``:
    ``plan`` has never been stored; its whole row is written (flows, and the steps it
    carries: see `pydynflow.storage.Storage.plan_snapshot`), else only its metadata.

    Also: output ``chunks`` rows to append, events to store (``envelope_add``), the oldest
    stored event of a step to drop (``envelope_pop``) and all of a step's (``envelope_clear``),
    and requests for other worlds (``posts``: ``(inbox, request)``). A plan row that stops the plan or pauses it for a person carries the release of the
    plan's singleton locks, so that they go in the same transaction; one that stores
    transitions carries the execution-plan hooks they call (`take_hook_calls`).
    """
    plans = () if plan is None else (storage.plan_snapshot(plan, full=new, new=new),)
    hooks = None
    if plan is not None and plan.hook_states:  # no list unless a hook may be due
        hooks = take_hook_calls(plan)
    released: tuple[tuple[str, str, str], ...] = ()
    if plan is not None:
        if new and plan.valid:
            steps = row_steps(steps, new=True)  # the plan-phase and unstarted ones: in its row
        if plan.state in _LETTING_GO:
            names = singleton_classes(plan)  # empty at once if no Singleton class exists
            if names and releases_singleton_locks(plan):
                released = release_requests(names, plan.id)
    return Persist(
        tuple(map(storage.step_snapshot, steps)),
        tuple(map(storage.action_snapshot, actions)),
        plans,
        claim,
        on_commit,
        tuple(chunks),
        envelope_add,
        envelope_pop,
        envelope_clear,
        released,
        hooks,
        posts,
    )


_LETTING_GO = (PlanState.STOPPED, PlanState.PAUSED)  # states whose row may release locks


class ClaimRefused(PersistenceError):
    """A change's `Claim` found its plan in none of its states (or gone): nothing of the
    change was written."""


@dataclass(frozen=True, slots=True)
class Sync:
    """Ask for a reply once everything sent before it is committed."""


class PersistenceActor(PooledActor):
    """Hand batches of state changes to the writer; acknowledge each sender after its commit.

    Start it on a dispatcher of its own with one thread (`start_persistence`).
    ``on_hooks(calls)`` gets the execution-plan hooks of each committed message, in commit
    order (without it they are dropped).
    """

    def __init__(
        self,
        storage: Storage,
        world_id: str,
        writer: Writer | None = None,
        on_hooks: Callable[[HookCalls], None] | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.on_hooks = on_hooks
        self.writer: Writer = writer if writer is not None else ThreadWriter(storage)
        self.pending: list[Persist] = []
        self.flush_scheduled = False
        self.log = get_logger(world_id=world_id, component="persistence")
        self.batches = 0
        self.records = 0

    @property
    def commits(self) -> int:
        """Return how many transactions the writer has committed."""
        return int(self.writer.transactions)

    def on_receive(self, message: Any) -> Any:
        """Gather `Persist` messages until the next `Flush`; answer a `Sync` once drained."""
        if isinstance(message, Persist):
            self.pending.append(message)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                tell(self._actor_ref, Flush())
        elif isinstance(message, Flush):
            self.flush_scheduled = False
            self._flush()
        elif isinstance(message, Sync):
            self._flush()
            return self.writer.drain()
        return None

    def on_stop(self) -> None:
        """Hand over what is gathered, then close the writer once it is committed."""
        try:
            self._flush()
        finally:
            self.writer.close()  # after the batches in flight are acknowledged

    def _flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        # In batches of at most BATCH_LIMIT messages: the writer decides how many go into
        # one transaction (see `pydynflow.storage.writer.pacer.Pacer`), and it can only cut
        # between batches.
        batches = [pending[at : at + BATCH_LIMIT] for at in range(0, len(pending), BATCH_LIMIT)]
        self.batches += len(batches)
        self.records += len(pending)
        work = [
            (
                [request_of(message) for message in batch],
                functools.partial(_acknowledge, batch, self.log, self.on_hooks),
            )
            for batch in batches
        ]
        report = telemetry.current()
        if report.enabled:  # timed from here: the engine waits that long for a commit
            work = [(requests, _measured(report, requests, done)) for requests, done in work]
        self.writer.submit_all(work)


def _measured(report: telemetry.Telemetry, requests: list[ChangeSet], done: Any) -> Any:
    """Return ``done``, first telling ``report`` of the committed ``requests``."""
    started = time.perf_counter()

    def measured(refused: set[int], error: PersistenceError | None) -> None:
        if error is None:
            report.committed(requests, time.perf_counter() - started)
        done(refused, error)

    return measured


def _acknowledge(
    batch: list[Persist],
    log: Any,
    on_hooks: Callable[[HookCalls], None] | None,
    refused: set[int],
    error: PersistenceError | None,
) -> None:
    """Reply to every message of a committed (or failed) batch, in order.

    Runs where the writer acknowledges: the persistence thread, or the writer's reply
    thread; ``on_commit`` callbacks only tell actors and settle promises. A committed
    message's hooks go to ``on_hooks`` first (a caller told of the commit finds them queued).
    """
    if error is not None:
        log.error("commit failed", error=str(error), messages=len(batch))
    for index, message in enumerate(batch):
        hooks = message.hooks
        if hooks is not None and on_hooks is not None and error is None and index not in refused:
            try:
                on_hooks(hooks)
            except Exception:  # a broken sink must not stop the writer
                log.exception("handing execution-plan hooks over failed")
        if message.on_commit is None:
            continue
        reply = error
        if reply is None and index in refused:
            claim = message.claim
            assert claim is not None
            reply = ClaimRefused(
                f"execution plan {claim.plan_id} is not in {'/'.join(claim.from_states)}"
            )
        try:
            message.on_commit(reply)
        except Exception:  # a broken callback must not stop the writer
            log.exception("on_commit callback failed")


def request_of(message: Persist) -> ChangeSet:
    """Return ``message`` as the writer takes it: a `ChangeSet`, without the callback."""
    claim = message.claim
    return make_change_set(
        (
            message.steps,
            message.actions,
            message.plans,
            None if claim is None else (claim.plan_id, claim.from_states, claim.to_state),
            message.chunks,
            message.envelope_add,
            message.envelope_pop,
            message.envelope_clear,
            message.records_delete,
            message.posts,
        )
    )


def store_plan(
    persistence: Any, storage: Storage, plan: ExecutionPlan, stored: Any, then: Any = None
) -> None:
    """Store a freshly planned plan whole; resolve ``stored`` once it is committed.

    ``then(error)``, if given, runs after ``stored`` is resolved (from the persistence
    thread: it should only tell an actor).
    """

    def on_commit(error: BaseException | None) -> None:
        if error is None:
            stored.set_result(None)
        else:
            stored.set_exception(error)
        if then is not None:
            then(error)

    message = changes(
        storage,
        plan=plan,
        new=True,
        steps=plan.steps.values(),
        actions=plan.actions.values(),
        on_commit=on_commit,
    )
    tell(persistence, message)


def start_persistence(
    storage: Storage,
    world_id: str,
    *,
    fatal_timeout: float = FATAL_TIMEOUT,
    on_fatal: Any = None,
    on_hooks: Callable[[HookCalls], None] | None = None,
) -> tuple[Any, Dispatcher]:
    """Start a persistence actor on its own one-thread dispatcher; return both.

    Its writer is a child process for SQLite files and PostgreSQL (see `writer_for`); it
    retries a commit that fails for a passing reason for up to ``fatal_timeout`` seconds,
    then calls ``on_fatal(error)`` once. ``on_hooks``: see `PersistenceActor`.
    """
    writer = writer_for(storage, owner=world_id, fatal_timeout=fatal_timeout, on_fatal=on_fatal)
    try:
        writer.wait_ready()  # a database the writer cannot open fails the start, not a commit
    except BaseException:
        writer.close()
        raise
    dispatcher = Dispatcher(1, name=f"pydynflow-persistence-{world_id[:8]}")
    try:
        actor = PersistenceActor.start(storage, world_id, writer, on_hooks, _dispatcher=dispatcher)
    except BaseException:
        writer.close()
        dispatcher.shutdown()
        raise
    return actor, dispatcher


def persist_and_wait(persistence: Any, message: Persist, timeout: float | None = None) -> None:
    """Send ``message`` (without ``on_commit``) and block until it is committed.

    For callers outside the actor system (user threads), never from actor code.
    """
    done: Promise[None] = Promise()

    def on_commit(error: BaseException | None) -> None:
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    message.on_commit = on_commit
    persistence.tell(message)
    done.result(timeout)
