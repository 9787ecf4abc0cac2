"""Tests for pooled actors: the pykka actor contract, pool behaviour, pykka internals."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import itertools
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import pykka
import pytest
from pykka import ActorDeadError, ActorRef, ActorRegistry, messages
from pykka._envelope import Envelope

from pydynflow.actors.pooled import (
    DEADLOCK_MESSAGE,
    Dispatcher,
    PooledActor,
    PooledFuture,
    get_default_dispatcher,
    tell_and_run,
)

WAIT = 10.0  # Generous upper bound for every wait; no test sleeps to synchronise.


# -- Actor bodies, mixed into an actor base class by the tests ---------------------------


class Recorder:
    """Record messages and lifecycle hooks; answer a few commands."""

    value = 42

    def __init__(self, events: list[str] | None = None, stopped: threading.Event | None = None):
        super().__init__()
        self.events = events if events is not None else []
        self.stopped = stopped
        self.seen: list[Any] = []
        self.failed = threading.Event()

    def on_start(self) -> None:
        self.events.append("start")

    def on_stop(self) -> None:
        self.events.append("stop")
        if self.stopped is not None:
            self.stopped.set()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.events.append(f"failure {exception_type.__name__}: {exception_value}")
        self.failed.set()

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("seen",):
                return list(self.seen)
            case ("echo", value):
                return value
            case ("self",):
                return self
            case ("raise", exception):
                raise exception
            case ("wait", gate):
                return "waited" if gate.wait(WAIT) else "gate timeout"
            case _:
                self.seen.append(message)
                return None

    def add(self, a: int, b: int) -> int:
        return a + b

    def note(self, item: Any) -> None:
        self.seen.append(item)


class TellsInInit(Recorder):
    """Send itself messages from `__init__`, before the actor is started."""

    def __init__(self) -> None:
        super().__init__()
        self.actor_ref.tell("from init 1")  # type: ignore[attr-defined]
        self.actor_ref.tell("from init 2")  # type: ignore[attr-defined]

    def on_start(self) -> None:
        self.seen.append("on_start")


class RacyCounter:
    """Count with a non-atomic read-modify-write that yields in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.busy = False
        self.overlaps = 0

    def on_receive(self, message: Any) -> Any:
        if message == "report":
            return self.count, self.overlaps
        if self.busy:
            self.overlaps += 1
        self.busy = True
        count = self.count
        time.sleep(0)  # releases the GIL: a second worker would interleave (noqa: sleep-ok)
        self.count = count + 1
        self.busy = False
        return None


class Asker:
    """Try to block on other actors from inside a handler."""

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("ask", other):
                return _error_text(lambda: other.ask(("echo", 1)))
            case ("get", future):
                return _error_text(future.get)
            case ("stop", other):
                return _error_text(other.stop)
            case ("ask self",):
                return _error_text(lambda: self.actor_ref.ask(("echo", 1)))  # type: ignore[attr-defined]
            case ("poll", future):
                return future.get(timeout=0)
        return None


def _error_text(call: Callable[[], Any]) -> str:
    try:
        call()
    except RuntimeError as error:
        return str(error)
    return "did not raise"


class Tagger:
    """Append (tag, n) to a shared log."""

    def __init__(self, tag: str, log: list[tuple[str, int]]) -> None:
        super().__init__()
        self.tag = tag
        self.log = log

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, int):
            self.log.append((self.tag, message))
        return None


_classes: dict[tuple[type, type], type] = {}


def actor_class(body: type, base: type[pykka.Actor]) -> type[Any]:
    """Return the actor class combining `body` with `base` (cached)."""
    key = (body, base)
    if key not in _classes:
        _classes[key] = type(f"{body.__name__}On{base.__name__}", (body, base), {})
    return _classes[key]


# -- The pykka actor contract, run against ThreadingActor and PooledActor ------------------


class ActorContract:
    """Behaviour every actor implementation must share with `pykka.ThreadingActor`."""

    actor_base: type[pykka.Actor]

    @pytest.fixture
    def spawn(self) -> Iterator[Callable[..., ActorRef[Any]]]:
        refs: list[ActorRef[Any]] = []

        def spawn(body: type, *args: Any, **kwargs: Any) -> ActorRef[Any]:
            ref = actor_class(body, self.actor_base).start(*args, **kwargs)
            refs.append(ref)
            return ref

        yield spawn
        for future in [ref.stop(block=False) for ref in refs]:
            future.get(timeout=WAIT)

    def test_tells_are_handled_in_order_before_a_later_ask(self, spawn: Any) -> None:
        ref = spawn(Recorder)
        for i in range(1000):
            ref.tell(i)
        assert ref.ask(("seen",), timeout=WAIT) == list(range(1000))

    def test_ask_returns_the_handler_value(self, spawn: Any) -> None:
        ref = spawn(Recorder)
        assert ref.ask(("echo", "hello"), timeout=WAIT) == "hello"
        future = ref.ask(("echo", 7), block=False)
        assert isinstance(future, pykka.Future)
        assert future.get(timeout=WAIT) == 7
        assert future.get(timeout=WAIT) == 7

    def test_ask_raises_the_handler_exception_and_the_actor_keeps_running(self, spawn: Any) -> None:
        ref = spawn(Recorder)
        with pytest.raises(ValueError, match="boom"):
            ref.ask(("raise", ValueError("boom")), timeout=WAIT)
        assert ref.is_alive()
        assert ref.ask(("echo", 1), timeout=WAIT) == 1

    def test_proxy_gets_sets_attributes_and_calls_methods(self, spawn: Any) -> None:
        proxy = spawn(Recorder).proxy()
        assert proxy.value.get(timeout=WAIT) == 42
        assert proxy.add(1, 2).get(timeout=WAIT) == 3
        proxy.value = 7
        assert proxy.value.get(timeout=WAIT) == 7
        proxy.note.defer("deferred")
        assert proxy.seen.get(timeout=WAIT) == ["deferred"]

    def test_messages_sent_from_init_are_handled_after_on_start(self, spawn: Any) -> None:
        ref = spawn(TellsInInit)
        assert ref.ask(("seen",), timeout=WAIT) == ["on_start", "from init 1", "from init 2"]

    def test_on_start_and_on_stop_run_once_each(self, spawn: Any) -> None:
        events: list[str] = []
        ref = spawn(Recorder, events)
        assert ref.ask(("echo", 1), timeout=WAIT) == 1
        assert events == ["start"]
        assert ref.stop(timeout=WAIT) is True
        assert events == ["start", "stop"]
        assert ref.stop(timeout=WAIT) is False
        assert events == ["start", "stop"]

    def test_on_failure_runs_when_a_tell_handler_raises_and_the_actor_stops(
        self, spawn: Any
    ) -> None:
        events: list[str] = []
        ref = spawn(Recorder, events)
        proxy = ref.proxy()
        failed = proxy.failed.get(timeout=WAIT)
        ref.tell(("raise", ValueError("bad tell")))
        assert failed.wait(WAIT)
        assert ref.actor_stopped.wait(WAIT)
        assert not ref.is_alive()
        assert events == ["start", "failure ValueError: bad tell"]  # and no on_stop
        with pytest.raises(ActorDeadError):
            ref.ask(("echo", 1), timeout=WAIT)

    def test_a_base_exception_in_a_handler_stops_the_actor(self, spawn: Any) -> None:
        stopped = threading.Event()
        ref = spawn(Recorder, None, stopped)
        ref.tell(("raise", SystemExit(3)))
        assert stopped.wait(WAIT)  # via Actor._stop(), so on_stop runs
        assert ref.actor_stopped.wait(WAIT)
        with pytest.raises(ActorDeadError):
            ref.tell("late")

    def test_stop_makes_later_messages_fail(self, spawn: Any) -> None:
        ref = spawn(Recorder)
        ref.stop(timeout=WAIT)
        assert not ref.is_alive()
        with pytest.raises(ActorDeadError):
            ref.ask(("echo", 1), timeout=WAIT)
        with pytest.raises(ActorDeadError):
            ref.tell("late")
        with pytest.raises(ActorDeadError):
            ref.proxy()

    def test_asks_queued_behind_a_stop_fail_with_actor_dead_error(self, spawn: Any) -> None:
        ref = spawn(Recorder)
        gate = threading.Event()
        busy = ref.ask(("wait", gate), block=False)
        stopping = ref.stop(block=False)
        ref.tell("dropped")
        pending = [ref.ask(("echo", i), block=False) for i in range(3)]
        gate.set()
        assert busy.get(timeout=WAIT) == "waited"
        assert stopping.get(timeout=WAIT) is True
        for future in pending:
            with pytest.raises(ActorDeadError, match="stopped before handling the message"):
                future.get(timeout=WAIT)


class TestThreadingActorContract(ActorContract):
    actor_base = pykka.ThreadingActor


class TestPooledActorContract(ActorContract):
    actor_base = PooledActor


# -- Pooled-specific behaviour ---------------------------------------------------------------


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    pool = Dispatcher(max_workers=4, name="test-dispatch")
    yield pool
    pool.shutdown(wait=True)


def start(body: type, pool: Dispatcher, *args: Any, **kwargs: Any) -> ActorRef[Any]:
    return actor_class(body, PooledActor).start(*args, _dispatcher=pool, **kwargs)


def pool_threads(pool: Dispatcher) -> int:
    """Count the live worker threads of `pool`."""
    return sum(thread.name.startswith(f"{pool.name}-") for thread in threading.enumerate())


def test_thousands_of_actors_share_at_most_max_workers_threads(dispatcher: Dispatcher) -> None:
    threads_before = set(threading.enumerate())  # (other tests' may still be ending)
    refs = [start(RacyCounter, dispatcher) for _ in range(2000)]
    assert pool_threads(dispatcher) == 0  # idle actors hold no thread
    for ref in refs:
        ref.tell("incr")
        ref.tell("incr")
    reports = [ref.ask("report", block=False) for ref in refs]
    assert [future.get(timeout=WAIT)[0] for future in reports] == [2] * 2000
    assert len(set(threading.enumerate()) - threads_before) <= 4
    assert 1 <= pool_threads(dispatcher) <= 4
    assert dispatcher.actor_count == 2000


def test_each_actor_handles_one_message_at_a_time(dispatcher: Dispatcher) -> None:
    refs = [start(RacyCounter, dispatcher) for _ in range(20)]
    senders, tells = 5, 50

    def send() -> None:
        for _ in range(tells):
            for ref in refs:
                ref.tell("incr")

    send_from_threads(senders, send)
    reports = [ref.ask("report", timeout=WAIT) for ref in refs]
    assert reports == [(senders * tells, 0)] * 20


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads every few bytecodes, to shake out races."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def send_from_threads(senders: int, send: Callable[[], None]) -> None:
    """Run `send` on `senders` threads released together by a barrier, and join them."""
    barrier = threading.Barrier(senders)

    def run() -> None:
        barrier.wait(WAIT)
        send()

    threads = [threading.Thread(target=run) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_an_actor_is_never_run_by_two_workers_at_once() -> None:
    # A tiny batch makes actors hop between workers all the time.
    pool = Dispatcher(max_workers=4, name="test-hop", batch_size=2)
    try:
        refs = [start(RacyCounter, pool) for _ in range(8)]

        def send() -> None:
            for _ in range(100):
                for ref in refs:
                    ref.tell("incr")

        send_from_threads(4, send)
        reports = [ref.ask("report", timeout=WAIT) for ref in refs]
        assert reports == [(400, 0)] * 8
    finally:
        pool.shutdown()


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize("workers", [1, 4])
def test_no_message_is_stranded_when_an_actor_or_a_worker_goes_idle(workers: int) -> None:
    # Each round trip lets the actor and the workers go idle just as the next
    # message arrives: a lost wake-up shows up as a Timeout.
    pool = Dispatcher(max_workers=workers, name="test-stranded")
    refs = [start(Recorder, pool) for _ in range(4)]
    errors: list[str] = []
    clients = itertools.count()

    def ask_in_turn() -> None:
        ref = refs[next(clients) % len(refs)]
        try:
            for i in range(1500):
                assert ref.ask(("echo", i), timeout=5) == i
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    try:
        send_from_threads(8, ask_in_turn)
    finally:
        pool.shutdown()
    assert errors == []


def test_a_busy_actor_yields_the_worker_after_a_batch() -> None:
    pool = Dispatcher(max_workers=1, name="test-fair", batch_size=4)
    try:
        log: list[tuple[str, int]] = []
        gate = threading.Event()
        blocker = start(Recorder, pool)
        a, b = start(Tagger, pool, "a", log), start(Tagger, pool, "b", log)
        busy = blocker.ask(("wait", gate), block=False)  # occupy the only worker
        for i in range(8):
            a.tell(i)
        for i in range(8):
            b.tell(i)
        gate.set()
        assert busy.get(timeout=WAIT) == "waited"
        a.ask("sync", timeout=WAIT)
        b.ask("sync", timeout=WAIT)
        assert [tag for tag, _ in log] == list("aaaabbbbaaaabbbb")
    finally:
        pool.shutdown()


def test_worker_threads_start_lazily_and_stop_on_shutdown() -> None:
    pool = Dispatcher(max_workers=4, name="test-lazy")
    try:
        ref = start(Tagger, pool, "a", [])  # no on_start: nothing to run yet
        assert pool_threads(pool) == 0
        assert ref.ask("sync", timeout=WAIT) is None
        assert 1 <= pool_threads(pool) <= 2
    finally:
        pool.shutdown()
    assert pool_threads(pool) == 0


def test_pooled_actors_are_registered_only_on_request(dispatcher: Dispatcher) -> None:
    hidden = start(Recorder, dispatcher)
    listed = start(Recorder, dispatcher, register=True)
    assert hidden not in ActorRegistry.get_all()
    assert listed in ActorRegistry.get_all()
    listed.stop(timeout=WAIT)
    assert listed not in ActorRegistry.get_all()


def test_the_dispatcher_can_be_chosen_per_class_instance_or_start_call() -> None:
    other = Dispatcher(max_workers=1, name="test-other")

    class OnOther(Recorder, PooledActor):
        dispatcher = other

    class InInit(Recorder, PooledActor):
        def __init__(self) -> None:
            super().__init__()
            self.dispatcher = other

    try:
        refs: list[ActorRef[Any]] = [OnOther.start(), InInit.start(), start(Recorder, other)]
        assert [ref.proxy().dispatcher.get(timeout=WAIT) for ref in refs] == [other] * 3
        assert other.actor_count == 3
        on_default = actor_class(Recorder, PooledActor).start()
        assert on_default.proxy().dispatcher.get(timeout=WAIT) is get_default_dispatcher()
        on_default.stop(timeout=WAIT)
    finally:
        other.shutdown()


def test_an_idle_actor_nobody_references_stays_alive_until_stopped(
    dispatcher: Dispatcher,
) -> None:
    stopped = threading.Event()
    ref = start(Recorder, dispatcher, None, stopped)
    gc.collect()
    assert ref.ask(("echo", "still here"), timeout=WAIT) == "still here"

    actor = weakref.ref(ref.ask(("self",), timeout=WAIT))
    del ref
    gc.collect()
    assert actor() is not None  # the dispatcher holds it, not pykka
    ref = actor().actor_ref  # type: ignore[union-attr]
    assert ref.ask(("echo", 1), timeout=WAIT) == 1
    assert ref.stop(timeout=WAIT) is True
    assert stopped.is_set()
    dispatcher.shutdown()  # joins the workers: nothing is still running the actor
    del ref
    gc.collect()
    assert actor() is None  # and stopping released it


def test_a_stopped_actor_is_freed_by_reference_counting(dispatcher: Dispatcher) -> None:
    """No reference cycle outlives a stopped actor: step actors stop by the thousand, and
    cycles would leave each to the garbage collector (whose passes then cost W1 ~10%)."""
    gc.collect()
    gc.disable()
    try:
        ref = start(Recorder, dispatcher, None, threading.Event())
        assert ref.ask(("echo", 1), timeout=WAIT) == 1
        actor = weakref.ref(ref.ask(("self",), timeout=WAIT))
        assert ref.stop(timeout=WAIT) is True
        dispatcher.shutdown()  # joins the workers: nothing is still running the actor
        probe = weakref.ref(ref)
        del ref
        assert probe() is None  # the ref and its mailbox, without gc.collect()
        assert actor() is None
    finally:
        gc.enable()


def test_blocking_from_a_handler_raises_instead_of_deadlocking(dispatcher: Dispatcher) -> None:
    asker = start(Asker, dispatcher)
    other = start(Recorder, dispatcher)
    pending = PooledFuture[int]()
    assert asker.ask(("ask", other), timeout=WAIT) == DEADLOCK_MESSAGE
    assert asker.ask(("ask self",), timeout=WAIT) == DEADLOCK_MESSAGE
    assert asker.ask(("get", pending), timeout=WAIT) == DEADLOCK_MESSAGE
    assert asker.ask(("stop", other), timeout=WAIT) == DEADLOCK_MESSAGE
    # A non-blocking poll is allowed.
    pending.set(5)
    assert asker.ask(("poll", pending), timeout=WAIT) == 5


def test_get_times_out_and_rejects_a_second_set() -> None:
    future = PooledFuture[int]()
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0)
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.01)
    future.set(1)
    assert future.done()
    assert future.get(timeout=0) == 1
    with pytest.raises(queue.Full):  # as pykka's futures do
        future.set(2)


def test_derived_futures_work(dispatcher: Dispatcher) -> None:
    ref = start(Recorder, dispatcher)
    first = ref.ask(("echo", [1, 20, 300]), block=False)
    second = ref.ask(("echo", 4), block=False)
    assert first.map(sum).get(timeout=WAIT) == 321
    assert first.filter(lambda x: x > 10).get(timeout=WAIT) == [20, 300]
    assert first.join(second).get(timeout=WAIT) == [[1, 20, 300], 4]
    assert pykka.get_all([first, second], timeout=WAIT) == [[1, 20, 300], 4]


def test_as_asyncio_resolves_without_blocking_the_loop(dispatcher: Dispatcher) -> None:
    ref = start(Recorder, dispatcher)
    gate = threading.Event()

    async def main() -> tuple[Any, int, Any, Any]:
        future = ref.ask(("wait", gate), block=False)
        assert isinstance(future, PooledFuture)
        waiting = future.as_asyncio()
        ticks = 0
        deadline = time.monotonic() + WAIT
        while not waiting.done() and time.monotonic() < deadline:
            ticks += 1
            if ticks == 100:
                gate.set()  # the handler can only finish once the loop has ticked
            await asyncio.sleep(0)
        value = await waiting

        # `await` on the future itself does not block the loop either.
        gate.clear()

        async def open_gate_later() -> None:
            for _ in range(10):
                await asyncio.sleep(0)
            gate.set()

        opener = asyncio.create_task(open_gate_later())
        awaited = await ref.ask(("wait", gate), block=False)
        await opener
        mapped = await ref.ask(("echo", 2), block=False).map(lambda x: x * 10)
        return value, ticks, awaited, mapped

    value, ticks, awaited, mapped = asyncio.run(main())
    assert (value, awaited, mapped) == ("waited", "waited", 20)
    assert ticks >= 100


def test_as_asyncio_propagates_exceptions(dispatcher: Dispatcher) -> None:
    ref = start(Recorder, dispatcher)

    async def main() -> None:
        with pytest.raises(KeyError, match="missing"):
            future = ref.ask(("raise", KeyError("missing")), block=False)
            assert isinstance(future, PooledFuture)
            await future.as_asyncio()
        with pytest.raises(KeyError, match="again"):
            await ref.ask(("raise", KeyError("again")), block=False)

    asyncio.run(main())


def test_an_ask_interrupted_by_a_base_exception_fails_instead_of_hanging(
    dispatcher: Dispatcher,
) -> None:
    ref = start(Recorder, dispatcher)
    with pytest.raises(ActorDeadError):
        ref.ask(("raise", SystemExit(1)), timeout=WAIT)
    assert not ref.is_alive()


def test_shutdown_stops_every_actor_and_refuses_new_ones() -> None:
    pool = Dispatcher(max_workers=2, name="test-shutdown")
    stopped = [threading.Event() for _ in range(50)]
    refs = [start(Recorder, pool, None, event) for event in stopped]
    gate = threading.Event()
    busy = refs[0].ask(("wait", gate), block=False)
    pending = refs[0].ask(("echo", 1), block=False)
    gate.set()
    pool.shutdown()
    assert busy.get(timeout=WAIT) == "waited"
    assert pending.get(timeout=WAIT) == 1  # sent before the stop: handled
    assert all(event.is_set() for event in stopped)
    assert not any(ref.is_alive() for ref in refs)
    assert pool.actor_count == 0
    with pytest.raises(RuntimeError, match="shut down"):
        start(Recorder, pool)


def test_a_late_envelope_after_teardown_gets_actor_dead_error(dispatcher: Dispatcher) -> None:
    ref = start(Recorder, dispatcher)
    ref.stop(timeout=WAIT)
    dispatcher.shutdown()  # the teardown has certainly finished
    late = PooledFuture[Any]()
    ref.actor_inbox.put(Envelope(("echo", 1), reply_to=late))  # as a racing `ask` would
    with pytest.raises(ActorDeadError):
        late.get(timeout=WAIT)


class ThreadNoter(PooledActor):
    """Note the thread each message is handled on; ``("block", event)`` waits on ``event``."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[tuple[Any, str]] = []
        self.done = threading.Event()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "block":
            message[1].wait(WAIT)
        self.threads.append((message if not isinstance(message, tuple) else message[0],
                             threading.current_thread().name))  # fmt: skip
        if message == "last":
            self.done.set()
        return None


def test_tell_and_run_gives_an_idle_actor_its_turn_on_the_calling_thread(
    dispatcher: Dispatcher,
) -> None:
    ref = ThreadNoter.start(_dispatcher=dispatcher)
    here = threading.current_thread().name
    assert tell_and_run(ref, "last") is True
    noter = ref.proxy()
    assert noter.threads.get(timeout=WAIT) == [("last", here)]  # handled before it returned
    ref.stop(timeout=WAIT)
    assert tell_and_run(ref, "late") is False  # a stopped actor: nothing runs


def test_tell_and_run_queues_behind_a_busy_actor(dispatcher: Dispatcher) -> None:
    ref = ThreadNoter.start(_dispatcher=dispatcher)
    release = threading.Event()
    ref.tell(("block", release))  # the actor is busy on a dispatcher thread
    assert tell_and_run(ref, "last") is True  # queued: this thread does not wait for it
    release.set()
    noter = ref.proxy()
    assert noter.done.get(timeout=WAIT).wait(WAIT)
    handled = noter.threads.get(timeout=WAIT)
    assert [message for message, _ in handled] == ["block", "last"]  # in order
    assert all(name.startswith(f"{dispatcher.name}-") for _, name in handled)
    ref.stop(timeout=WAIT)


class SelfTeller(PooledActor):
    """On ``"first"``, tell itself ``"second"`` (which waits for the turn to end)."""

    def __init__(self, second: threading.Event) -> None:
        super().__init__()
        self.second = second

    def on_receive(self, message: Any) -> Any:
        if message == "first":
            self.actor_ref.tell("second")
        elif message == "second":
            self.second.set()
        return None


def test_a_message_arriving_during_an_inline_turn_is_not_stranded() -> None:
    """A turn run by tell_and_run on a foreign thread leaves the actor ready for the pool:
    the pool must be woken for what arrived meanwhile (here no pool thread exists yet)."""
    dispatcher = Dispatcher(1, name="inline-then-pool", batch_size=1)  # one message a turn
    try:
        second = threading.Event()
        actor = SelfTeller.start(second, _dispatcher=dispatcher)
        assert tell_and_run(actor, "first") is True
        assert second.wait(WAIT)  # nothing else is sent that could wake the pool
    finally:
        dispatcher.shutdown()


# -- The pykka internals pooled.py builds on -------------------------------------------------


def test_the_pykka_internals_we_rely_on_are_unchanged() -> None:
    major, minor = metadata.version("pykka").split(".")[:2]
    assert (major, minor) == ("4", "5")

    expected: dict[Callable[..., Any], str] = {
        pykka.Actor.start: "(*args: 'Any', **kwargs: 'Any') -> 'ActorRef[Self]'",
        pykka.Actor.__init__: "(self, *_args: 'Any', **_kwargs: 'Any') -> 'None'",
        pykka.Actor._create_actor_inbox: "() -> 'ActorInbox'",
        pykka.Actor._create_future: "() -> 'Future[Any]'",
        pykka.Actor._start_actor_loop: "(self) -> 'None'",
        pykka.Actor._actor_loop_setup: "(self) -> 'None'",
        pykka.Actor._actor_loop_running: "(self) -> 'None'",
        pykka.Actor._actor_loop_teardown: "(self) -> 'None'",
        pykka.Actor._handle_receive: "(self, message: 'Any') -> 'Any'",
        pykka.Actor._stop: "(self) -> 'None'",
        pykka.Actor._handle_failure: (
            "(self, exception_type: 'type[BaseException] | None', "
            "exception_value: 'BaseException | None', traceback: 'TracebackType | None') -> 'None'"
        ),
        pykka.ActorRef.__init__: "(self, actor: 'A') -> 'None'",
        pykka.ActorRef.tell: "(self, message: 'Any') -> 'None'",
        pykka.Future.__init__: "(self) -> 'None'",
        pykka.Future.get: "(self, *, timeout: 'float | None' = None) -> 'T'",
        pykka.Future.set_get_hook: "(self, func: 'GetHookFunc[T]') -> 'None'",
    }
    for function, signature in expected.items():
        assert str(inspect.signature(function)) == signature, function.__qualname__
    for name in ("_create_actor_inbox", "_create_future"):
        assert isinstance(inspect.getattr_static(pykka.Actor, name), staticmethod)

    # How refs reach the inbox and create reply futures.
    assert "self.actor_inbox.put(Envelope(message))" in inspect.getsource(pykka.ActorRef.tell)
    ask_source = inspect.getsource(pykka.ActorRef.ask)
    assert "future = self.actor_class._create_future()" in ask_source
    assert "self.actor_inbox.put(Envelope(message, reply_to=future))" in ask_source
    teardown_source = inspect.getsource(pykka.Actor._actor_loop_teardown)
    assert "while not self.actor_inbox.empty():" in teardown_source
    assert "envelope = self.actor_inbox.get()" in teardown_source
    init_source = inspect.getsource(pykka.Actor.__init__)
    assert "self.actor_inbox = self._create_actor_inbox()" in init_source
    assert "self._actor_ref = ActorRef(self)" in init_source
    assert Envelope.__slots__ == ["message", "reply_to"]
    assert messages._ActorStop() == ()
    assert pykka.Future()._get_hook is None

    # PooledActor._stop replicates this body, and reads the registry's list.
    stop_source = inspect.getsource(pykka.Actor._stop)
    for line in (
        "ActorRegistry.unregister(self.actor_ref)",
        "self.actor_stopped.set()",
        "self.on_stop()",
        "self._handle_failure(*sys.exc_info())",
    ):
        assert line in stop_source, line
    assert isinstance(ActorRegistry._actor_refs, list)

    # _actor_loop_batch sends every message but these four straight to on_receive.
    receive_source = inspect.getsource(pykka.Actor._handle_receive)
    handled = {name for name in dir(messages) if f"messages.{name})" in receive_source}
    assert handled == {"_ActorStop", "ProxyCall", "ProxyGetAttr", "ProxySetAttr"}
    assert "return self.on_receive(message)" in receive_source

    # PooledActor._actor_loop_batch replicates this loop body: re-check it if this changes.
    running = inspect.getsource(pykka.Actor._actor_loop_running)
    assert hashlib.sha256(running.encode()).hexdigest()[:16] == RUNNING_LOOP_SHA256_PREFIX


RUNNING_LOOP_SHA256_PREFIX = "4109f316d2be434e"
