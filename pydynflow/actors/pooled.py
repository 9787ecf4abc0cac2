"""Pooled pykka actors on a small shared thread pool (one module: one turn protocol).

pykka's `ThreadingActor` gives every actor an OS thread; pydynflow needs tens of thousands of
mostly idle step actors, so a `PooledActor`'s mailbox is drained by a `Dispatcher`, a bounded
pool of daemon threads, and an idle actor holds no thread. Whoever wins a mailbox's schedule
token (a lock used as test-and-set) runs the actor's turn, so no two threads run one actor at
once. The mailbox, the dispatcher and the actor share that protocol, hence one module; the
future an ``ask`` returns is `pydynflow.actors.pooled_future`'s.

Never block on a future from actor code: a handler that waits for a reply holds a pool thread
the replier may need, and the pool deadlocks. Actor code tells, and replies come back as
messages; `PooledFuture.get` raises `RuntimeError` on a dispatcher thread unless it only polls.

The design, the pykka internals relied on (pinned to pykka 4.5, checked by
``tests/actors/test_pooled.py``) and how pooled actors depart from `ThreadingActor`:
``docs/internals/actors.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Self, TypeVar

import pykka
from pykka import ActorDeadError, ActorRef, ActorRegistry, messages
from pykka._envelope import Envelope  # what ActorRef.tell puts in an inbox (see above)

from pydynflow.actors.pooled_future import (
    DEADLOCK_MESSAGE,
    PooledFuture,
    _worker_state,
    on_dispatcher_thread,
)

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

__all__ = ["Dispatcher", "PooledActor", "PooledFuture", "get_default_dispatcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_on_dispatcher_thread = on_dispatcher_thread
# Guards the lazy `threading.Event` of a stopped flag (rare: only `wait` makes one).
_flag_lock = threading.Lock()


def _on_pool_of(dispatcher: Dispatcher) -> bool:
    return _worker_state.dispatcher is dispatcher


def _dead_letter(envelope: Envelope[Any], text: str) -> None:
    """Answer an envelope that reached a dead actor, as pykka's teardown does.

    A told message that carries its own reply (a promise the sender waits on) answers it
    through its ``dead_letter()`` method, if it has one: its sender must not wait forever.
    """
    if envelope.reply_to is None:
        answer = getattr(envelope.message, "dead_letter", None)
        if answer is not None:
            answer()
        return
    if isinstance(envelope.message, messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        error = ActorDeadError(text)
        envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))


class _Mailbox:
    """A pooled actor's inbox, which is also its scheduling unit on a dispatcher."""

    __slots__ = ("_actor", "_dead_ref", "_dispatcher", "_queue", "_started", "_token")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Envelope[Any]] = queue.SimpleQueue()
        # Held until the actor starts: envelopes sent from __init__ just wait.
        self._token = threading.Lock()
        self._token.acquire()
        self._actor: PooledActor | None = None
        self._dispatcher: Dispatcher | None = None
        self._started = False
        # The retired actor's class and urn, named in dead-letter errors. Not its ActorRef:
        # the ref holds this mailbox, and that cycle would leave every stopped actor to the
        # cyclic garbage collector, whose passes hold the GIL.
        self._dead_ref: tuple[type, str] | None = None

    def put(self, envelope: Envelope[Any], /) -> None:
        self._queue.put(envelope)
        if self._token.acquire(False):
            self._schedule()

    def put_and_run(self, envelope: Envelope[Any], /) -> None:
        """Queue ``envelope``; if the actor is idle, give it its turn on this thread now."""
        self._queue.put(envelope)
        if self._token.acquire(False):
            if self._actor is None:
                self._answer_dead_letters()
            else:
                dispatcher = self._dispatcher
                assert dispatcher is not None
                # `_on_pool_of`, inline: this runs several times per step.
                self._run(dispatcher.batch_size, _worker_state.dispatcher is dispatcher)

    def get(self) -> Envelope[Any]:
        # Only called by pykka's teardown after `empty()` returned False.
        return self._queue.get_nowait()

    def empty(self) -> bool:
        return self._queue.empty()

    def _schedule(self) -> None:
        # Caller holds the token.
        if self._actor is None:
            self._answer_dead_letters()
        else:
            assert self._dispatcher is not None
            self._dispatcher._submit(self)

    def _release(self) -> None:
        # Give up the token, then re-check: a `put` may have lost the race for it.
        self._token.release()
        if not self._queue.empty() and self._token.acquire(False):
            self._schedule()

    def _run(self, batch_size: int, on_pool: bool = True) -> None:
        """Give the actor one turn on the calling thread (the caller holds the token).

        ``on_pool``: the caller is one of the dispatcher's workers, which looks at the ready
        queue before it parks; any other thread must wake a worker for what is left.
        """
        actor = self._actor
        assert actor is not None
        try:
            if not self._started:
                self._started = True
                actor._actor_loop_setup()
            actor._actor_loop_batch(batch_size)
        except BaseException:
            actor._handle_failure(*sys.exc_info())
        if actor.actor_stopped._set:  # type: ignore[attr-defined]  # a _StoppedFlag
            self._retire(actor)
        elif not self._queue.empty():
            assert self._dispatcher is not None
            if on_pool:
                self._dispatcher._ready.append(self)
            else:
                self._dispatcher._submit(self)
        else:
            self._release()

    def _retire(self, actor: PooledActor) -> None:
        self._dead_ref = (type(actor), actor.actor_urn)  # formatted only if needed
        if not self._queue.empty():  # what is left (usually nothing), answered as dead
            text = f"{type(actor).__name__} ({actor.actor_urn}) stopped before handling the message"
            while not self._queue.empty():
                _dead_letter(self._queue.get_nowait(), text)
        self._actor = None
        assert self._dispatcher is not None
        self._dispatcher._forget(actor)
        self._release()

    def _answer_dead_letters(self) -> None:
        # Envelopes that raced past `ActorRef.is_alive()` after the teardown.
        while True:
            while not self._queue.empty():
                assert self._dead_ref is not None
                actor_class, urn = self._dead_ref
                text = f"{actor_class.__name__} ({urn}) stopped before handling the message"
                _dead_letter(self._queue.get_nowait(), text)
            self._token.release()
            if self._queue.empty() or not self._token.acquire(False):
                return


class Dispatcher:
    """A bounded pool of daemon threads that runs ready pooled actors.

    An actor becomes ready when a message arrives in its empty mailbox. A worker
    handles up to `batch_size` of its messages, one at a time. It then puts the
    actor back at the end of the ready queue if more are waiting, or leaves it
    idle. Threads are started lazily, up to `max_workers`.

    Args:
        max_workers: The maximum number of worker threads.
        name: The prefix for worker thread names.
        batch_size: The most messages one actor handles per turn (fairness).
    """

    def __init__(
        self, max_workers: int = 4, name: str = "pydynflow-dispatch", *, batch_size: int = 64
    ) -> None:
        if max_workers < 1 or batch_size < 1:
            raise ValueError("max_workers and batch_size must be at least 1")
        self.max_workers = max_workers
        self.name = name
        self.batch_size = batch_size
        self._ready: deque[_Mailbox | None] = deque()
        # Parked workers, most recent last; each sleeps on its own lock until released.
        self._idle: list[threading.Lock] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._live: set[PooledActor] = set()
        self._closing = False
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<Dispatcher {self.name!r} workers={len(self._threads)}/{self.max_workers} "
            f"actors={len(self._live)}{' closed' if self._closing else ''}>"
        )

    @property
    def actor_count(self) -> int:
        """Return how many live actors this dispatcher holds."""
        return len(self._live)

    @property
    def is_shutdown(self) -> bool:
        """Return whether `shutdown` has been called."""
        return self._closing

    def shutdown(self, wait: bool = True) -> None:
        """Stop every live actor, then stop the worker threads.

        Each actor gets a stop message behind the messages it already has, so
        `on_stop` runs and later asks fail with `ActorDeadError`. Starting an
        actor on a shut-down dispatcher raises `RuntimeError`.

        Args:
            wait: Wait until the actors have stopped and the threads have exited.
                Without waiting, actors that are busy when this is called may
                never get their stop message handled.

        Raises:
            RuntimeError: If `wait` is true and this runs on a dispatcher thread.
        """
        if wait and _on_dispatcher_thread():
            raise RuntimeError(DEADLOCK_MESSAGE)
        with self._lock:
            self._closing = True
        while True:  # Loop: an actor may start children from on_stop.
            with self._lock:
                actors = [a for a in self._live if a.actor_ref.is_alive()]
            if not actors:
                break
            stopping = [actor.actor_ref.stop(block=False) for actor in actors]
            if not wait:
                break
            for future in stopping:
                future.get()
        with self._lock:
            first_call, self._closed = not self._closed, True
            threads = list(self._threads)
        if first_call:
            self._ready.extend([None] * len(threads))  # One exit sentinel per worker.
            while self._idle:
                self._wake_one()
        if wait:
            for thread in threads:
                thread.join()

    def _adopt(self, actor: PooledActor) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError(f"dispatcher {self.name!r} is shut down")
            self._live.add(actor)

    def _forget(self, actor: PooledActor) -> None:
        with self._lock:
            self._live.discard(actor)

    def _submit(self, mailbox: _Mailbox) -> None:
        self._ready.append(mailbox)
        if not (self._idle and self._wake_one()) and len(self._threads) < self.max_workers:
            self._spawn()

    def _wake_one(self) -> bool:
        try:
            self._idle.pop().release()
        except IndexError:  # Another thread woke the last parked worker.
            return False
        return True

    def _spawn(self) -> None:
        with self._lock:
            if self._closed or self._idle or len(self._threads) >= self.max_workers:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError:  # Out of threads: carry on with the workers we have.
            with self._lock:
                self._threads.remove(thread)
            if not self._threads:
                raise

    def _work(self) -> None:
        _worker_state.dispatcher = self
        ready, idle, batch_size = self._ready, self._idle, self.batch_size
        park = threading.Lock()
        park.acquire()
        while True:
            if not ready:
                # Announce, then re-check: `_submit` appends, then looks for a
                # parked worker, so one of the two sides sees the other.
                idle.append(park)
                if not ready:
                    park.acquire()  # Sleep until `_wake_one` releases it.
                else:
                    try:
                        idle.remove(park)
                    except ValueError:  # Already being woken: absorb the release.
                        park.acquire()
                continue
            try:
                mailbox = ready.popleft()
            except IndexError:  # Another worker was quicker.
                continue
            if mailbox is None:
                return
            try:
                mailbox._run(batch_size)
            except BaseException:  # Keep the worker alive whatever happens.
                logger.exception("%s: unexpected error while running %r", self.name, mailbox)


_default_dispatcher: Dispatcher | None = None
_default_lock = threading.Lock()


def get_default_dispatcher() -> Dispatcher:
    """Return the process-wide dispatcher, creating it (again, if shut down) on first use."""
    global _default_dispatcher
    dispatcher = _default_dispatcher
    if dispatcher is None or dispatcher.is_shutdown:
        with _default_lock:
            if _default_dispatcher is None or _default_dispatcher.is_shutdown:
                _default_dispatcher = Dispatcher()
            dispatcher = _default_dispatcher
    return dispatcher


_actor_ids = itertools.count(1)

# The messages pykka's `Actor._handle_receive` handles itself; any other goes to on_receive.
_PYKKA_MESSAGES = (
    messages._ActorStop,
    messages.ProxyCall,
    messages.ProxyGetAttr,
    messages.ProxySetAttr,
)


class _PooledRef(ActorRef[Any]):
    """pykka's `ActorRef` without a weak reference per actor (one per live actor adds up).

    pykka keeps the weak reference only for `proxy`, to reach the actor object; a pooled
    actor's mailbox holds its actor while it lives (and drops it when it stops), so the
    reference asks the mailbox instead.
    """

    def __init__(self, actor: PooledActor) -> None:  # noqa: D107 - as pykka's
        self.actor_class = actor.__class__
        self.actor_urn = actor.actor_urn
        self.actor_inbox = actor.actor_inbox
        self.actor_stopped = actor.actor_stopped

    def _actor_weakref(self) -> PooledActor | None:  # type: ignore[override]
        return self.actor_inbox._actor  # type: ignore[attr-defined,no-any-return]


class _StoppedFlag:
    """`threading.Event` as pykka uses `actor_stopped`, without a condition per actor.

    pykka only calls ``set`` and ``is_set`` on it (and ``wait`` in rare paths), so a plain
    attribute does; a real event is made only for someone who waits.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with _flag_lock:
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if self._set:
            event.set()
        return event.wait(timeout)


class PooledActor(pykka.Actor):
    """Run as a pykka actor on a shared `Dispatcher` instead of its own thread.

    Use it exactly like `pykka.ThreadingActor`: `tell`, `ask`, proxies,
    `on_start`, `on_stop`, `on_failure` and `stop` behave the same way (see the
    module docstring for the few deviations). Handlers run on pool threads, one
    message at a time per actor. They must not block on futures: `tell`
    instead, and have the reply sent back as a message.

    The dispatcher is chosen at start time: the `_dispatcher` argument of
    `start`, else the `dispatcher` attribute (set it on a subclass, or on the
    instance in `__init__`), else `get_default_dispatcher()`.
    """

    dispatcher: Dispatcher | None = None
    """The dispatcher to run on (`None`: the default). Once started, the one it runs on."""

    _registered = False  # started with register=True: pykka's registry holds it

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # pykka's Actor.__init__, with a counter for the urn (a uuid4 reads the OS's random
        # source) and a flag for actor_stopped (an Event builds a Condition): step actors
        # are many, and each starts on the hot path.
        self.actor_urn = f"urn:pd:{next(_actor_ids)}"  # short: one per live actor
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = _StoppedFlag()  # type: ignore[assignment]
        self._actor_ref = _PooledRef(self)

    @classmethod
    def start(
        cls,
        *args: Any,
        register: bool = False,
        _dispatcher: Dispatcher | None = None,
        _first_turn_here: bool = False,
        **kwargs: Any,
    ) -> ActorRef[Self]:
        """Create the actor with `cls(*args, **kwargs)` and start it.

        Args:
            *args: Positional arguments for the constructor.
            register: Also register the actor in `pykka.ActorRegistry`. This is
                off by default because the registry's lookups are linear and
                `stop_all` is quadratic, so parents track their children themselves.
            _dispatcher: The dispatcher to run on (overrides `dispatcher`).
            _first_turn_here: Run the first turn (``on_start``, and what was sent from
                ``__init__``) on the calling thread before returning, instead of queueing
                it for the pool. For a caller with nothing else to do meanwhile; like any
                turn, it must not block.
            **kwargs: Keyword arguments for the constructor.

        Returns:
            The actor's reference.

        Raises:
            RuntimeError: If the chosen dispatcher is shut down.
        """
        obj = cls(*args, **kwargs)
        assert getattr(obj, "_actor_ref", None) is not None, (
            "Actor.__init__() have not been called. "
            "Did you forget to call super() in your override?"
        )
        if _dispatcher is not None:
            obj.dispatcher = _dispatcher
        if register:
            obj._registered = True
            ActorRegistry.register(obj.actor_ref)
        try:
            obj._start_actor_loop(first_turn_here=_first_turn_here)
        except BaseException:
            if register:
                ActorRegistry.unregister(obj.actor_ref)
            raise
        return obj._actor_ref

    def _stop(self) -> None:
        """pykka's ``_stop``, minus its cost for the many actors never registered.

        pykka scans its registry and formats two debug lines on every stop; step actors stop
        by the thousand, and a world's registry is empty.
        """
        if self._registered or ActorRegistry._actor_refs:  # pykka's list of registered refs
            ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Stopped %s", self)
        if type(self).on_stop is pykka.Actor.on_stop:  # nothing to run (step actors)
            return
        try:
            self.on_stop()
        except Exception:
            self._handle_failure(*sys.exc_info())

    def stop_now(self) -> None:
        """Stop this actor from its own handler at once, without a stop message.

        Cheaper than `stop` (no message round): the messages still in the mailbox are
        answered as to a dead actor, as pykka's ``_stop`` does.
        """
        self._stop()

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return PooledFuture()

    def _start_actor_loop(self, first_turn_here: bool = False) -> None:
        dispatcher = self.dispatcher = self.dispatcher or get_default_dispatcher()
        dispatcher._adopt(self)
        mailbox = self.actor_inbox
        assert isinstance(mailbox, _Mailbox)
        mailbox._actor = self
        mailbox._dispatcher = dispatcher
        if type(self).on_start is pykka.Actor.on_start:
            # Nothing to run before the first message: start idle, holding no thread.
            mailbox._started = True
            mailbox._release()
        elif first_turn_here:
            mailbox._run(dispatcher.batch_size, on_pool=_on_pool_of(dispatcher))
        else:
            dispatcher._submit(mailbox)

    def _actor_loop_batch(self, limit: int) -> None:
        """Handle up to `limit` queued messages, replicating `Actor._actor_loop_running`."""
        inbox = self.actor_inbox
        assert isinstance(inbox, _Mailbox)
        pending = inbox._queue
        stopped: _StoppedFlag = self.actor_stopped  # type: ignore[assignment]  # see __init__
        for _ in range(limit):
            if stopped._set or pending.empty():
                return
            envelope = pending.get_nowait()
            message = envelope.message
            try:
                if isinstance(message, _PYKKA_MESSAGES):  # stop and proxy messages
                    response = self._handle_receive(message)
                else:  # what _handle_receive would do, minus its four type checks
                    response = self.on_receive(message)
                if envelope.reply_to is not None:
                    envelope.reply_to.set(response)
            except Exception:
                if envelope.reply_to is not None:
                    logger.info(
                        "Exception returned from %s to caller:", self, exc_info=sys.exc_info()
                    )
                    envelope.reply_to.set_exception()
                else:
                    self._handle_failure(*sys.exc_info())
                    try:
                        self.on_failure(*sys.exc_info())
                    except Exception:
                        self._handle_failure(*sys.exc_info())
            except BaseException as exc:
                logger.debug("%r in %s. Stopping all actors.", exc, self)
                self._stop()
                if envelope.reply_to is not None:
                    error = ActorDeadError(f"{self.actor_ref} stopped by {exc!r}")
                    error.__cause__ = exc
                    envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))
                ActorRegistry.stop_all(block=False)


def tell_if_alive(ref: ActorRef[Any], message: Any) -> bool:
    """Tell ``ref`` unless its actor has stopped (timers and acks may outlive it)."""
    try:
        ref.tell(message)
    except ActorDeadError:
        return False
    return True


def tell_and_run(ref: ActorRef[Any], message: Any) -> bool:
    """Tell ``ref``'s pooled actor and, if it is idle, run its turn on this thread at once.

    For a thread that hands a result to an actor and has nothing else to do (a worker whose
    job just returned): the actor handles it without waking a dispatcher thread. Its
    handlers must not block, as on the dispatcher. Returns False if the actor had stopped.
    """
    stopped = ref.actor_stopped
    # `ref.is_alive()`, without its two calls for a pooled actor (several times per step)
    if stopped._set if type(stopped) is _StoppedFlag else stopped.is_set():
        return False
    inbox = ref.actor_inbox
    envelope = _new_envelope(Envelope)  # `Envelope(message)` without its __init__ call
    envelope.message, envelope.reply_to = message, None
    if type(inbox) is _Mailbox:
        inbox.put_and_run(envelope)
    else:
        inbox.put(envelope)
    return True


def tell(ref: ActorRef[Any], message: Any) -> None:
    """``ref.tell(message)`` for a pooled actor with fewer calls (once per step or more).

    Raises:
        ActorDeadError: the actor has stopped, as `ActorRef.tell` does.
    """
    stopped = ref.actor_stopped
    if stopped._set if type(stopped) is _StoppedFlag else stopped.is_set():
        raise ActorDeadError(f"{ref} not found")
    envelope = _new_envelope(Envelope)
    envelope.message, envelope.reply_to = message, None
    ref.actor_inbox.put(envelope)


_new_envelope = object.__new__


def stop_if_alive(ref: ActorRef[Any]) -> None:
    """Ask ``ref``'s actor to stop, without waiting, if it is still alive."""
    with contextlib.suppress(ActorDeadError):
        ref.stop(block=False)
