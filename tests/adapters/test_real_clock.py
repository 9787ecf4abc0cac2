"""RealClock: one thread fires every timer in due order (scenarios CLOCK-01..03)."""

from __future__ import annotations

import logging
import random
import threading
import time
import tracemalloc
from collections.abc import Iterator
from functools import partial

import pytest

from pydynflow.adapters.clocks.real import RealClock
from pydynflow.clock import Clock, ClockClosedError, Timer

WAIT = 5.0


@pytest.fixture
def clock() -> Iterator[RealClock]:
    clock = RealClock()
    yield clock
    clock.close()


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread not in before}


def test_real_clock_implements_the_protocol(clock: RealClock) -> None:
    assert isinstance(clock, Clock)
    first = clock.now()
    assert clock.now() >= first


def test_ordering_clock_01(clock: RealClock) -> None:
    arrivals: list[tuple[str, float]] = []
    done = threading.Event()

    def ping(name: str) -> None:
        arrivals.append((name, time.monotonic() - start))
        if name == "a":
            done.set()

    start = time.monotonic()
    clock.schedule(0.3, lambda: ping("a"))
    clock.schedule(0.1, lambda: ping("b"))
    clock.schedule(0.2, lambda: ping("c"))

    assert done.wait(WAIT)
    assert [name for name, _ in arrivals] == ["b", "c", "a"]
    for (_, at), expected in zip(arrivals, (0.1, 0.2, 0.3), strict=True):
        assert at == pytest.approx(expected, abs=0.08)


def test_stress_clock_02(clock: RealClock) -> None:
    threads, per_thread = 4, 20
    received: dict[int, set[int]] = {index: set() for index in range(threads)}
    lock = threading.Lock()
    count = [0]
    done = threading.Event()
    barrier = threading.Barrier(threads)

    def receive(thread_index: int, ping_id: int) -> None:
        with lock:
            received[thread_index].add(ping_id)
            count[0] += 1
            if count[0] == threads * per_thread:
                done.set()

    def arm(thread_index: int) -> None:
        rng = random.Random(thread_index)
        barrier.wait(WAIT)
        for ping_id in range(per_thread):
            clock.schedule(rng.uniform(0.0, 0.05), partial(receive, thread_index, ping_id))

    workers = [threading.Thread(target=arm, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)

    assert done.wait(WAIT), received
    assert received == {index: set(range(per_thread)) for index in range(threads)}


@pytest.mark.parametrize("receiver", [object(), "ping", None, 42])
def test_non_callable_raises_type_error_clock_03(clock: RealClock, receiver: object) -> None:
    before = set(threading.enumerate())
    with pytest.raises(TypeError, match="callable"):
        clock.schedule(0.1, receiver)  # type: ignore[arg-type]
    assert new_threads(before) == set()  # a refused timer does not start the thread


def test_bad_delay_raises(clock: RealClock) -> None:
    with pytest.raises(TypeError):
        clock.schedule("1", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clock.schedule(float("nan"), lambda: None)


def test_cancel_before_fire(clock: RealClock) -> None:
    fired: list[str] = []
    sentinel_fired = threading.Event()

    timer = clock.schedule(0.05, lambda: fired.append("cancelled timer"))
    assert timer.cancel() is True
    sentinel = clock.schedule(0.1, sentinel_fired.set)

    assert sentinel_fired.wait(WAIT)
    assert fired == []
    assert timer.cancelled and not timer.fired and not timer.pending
    assert timer.cancel() is False
    assert sentinel.fired and not sentinel.cancelled
    assert sentinel.cancel() is False  # too late: it fired


def test_negative_and_zero_delay_fire_as_soon_as_possible(clock: RealClock) -> None:
    order: list[str] = []
    done = threading.Event()
    before = clock.now()
    timer = clock.schedule(-5, lambda: order.append("negative"))

    def zero() -> None:
        order.append("zero")
        done.set()

    clock.schedule(0, zero)

    assert done.wait(WAIT)
    assert order == ["negative", "zero"]
    assert timer.due >= before  # a negative delay is clamped to now


def test_timer_due_is_in_clock_time(clock: RealClock) -> None:
    before = clock.now()
    timer = clock.schedule(10, lambda: None)
    after = clock.now()
    assert before + 10 <= timer.due <= after + 10
    assert isinstance(timer, Timer) and timer.pending


def test_earlier_timer_armed_while_sleeping_on_a_later_one_fires_first(clock: RealClock) -> None:
    order: list[str] = []
    probe = threading.Event()
    early_fired = threading.Event()

    late = clock.schedule(5.0, lambda: order.append("late"))
    # Let the thread run once, then it goes back to sleep until the late timer.
    clock.schedule(0, probe.set)
    assert probe.wait(WAIT)

    start = time.monotonic()

    def early() -> None:
        order.append("early")
        early_fired.set()

    clock.schedule(0.05, early)
    assert early_fired.wait(1.0)  # not woken up, it would fire only after 5 s
    assert time.monotonic() - start < 0.5
    assert order == ["early"]
    assert late.pending


def test_raising_callback_is_logged_and_later_timers_still_fire(
    clock: RealClock, caplog: pytest.LogCaptureFixture
) -> None:
    later = threading.Event()

    def boom() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="pydynflow.clock"):
        failing = clock.schedule(0, boom)
        clock.schedule(0.02, later.set)
        assert later.wait(WAIT)

    assert failing.fired
    records = [record for record in caplog.records if record.name == "pydynflow.clock"]
    assert len(records) == 1
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError


def test_callback_can_rearm_and_cancel_on_the_clock_thread(clock: RealClock) -> None:
    done = threading.Event()
    results: list[bool] = []
    victim = clock.schedule(0.2, lambda: results.append(False))

    def first() -> None:
        results.append(victim.cancel())
        clock.schedule(0.01, done.set)

    clock.schedule(0.01, first)
    assert done.wait(WAIT)
    assert results == [True]


def test_close_is_idempotent_and_stops_the_thread() -> None:
    before = set(threading.enumerate())
    clock = RealClock()
    assert new_threads(before) == set()  # the thread starts lazily

    fired = threading.Event()
    clock.schedule(0, fired.set)
    assert fired.wait(WAIT)
    pending = clock.schedule(3600, lambda: None)
    assert len(new_threads(before)) == 1

    clock.close()
    clock.close()

    assert new_threads(before) == set()
    assert clock.closed
    assert pending.cancelled and pending.cancel() is False
    with pytest.raises(ClockClosedError):
        clock.schedule(1, lambda: None)


def test_close_from_a_callback_does_not_deadlock() -> None:
    before = set(threading.enumerate())
    clock = RealClock()
    closed = threading.Event()
    never: list[int] = []

    def close_it() -> None:
        clock.close()
        closed.set()

    dropped = clock.schedule(3600, lambda: never.append(1))  # dropped by the close
    clock.schedule(0, close_it)
    assert closed.wait(WAIT)
    clock.close()  # joins the thread, which is now exiting
    assert new_threads(before) == set()
    assert dropped.cancelled and never == []


def test_ten_thousand_armed_timers_cost_one_thread_and_little_memory() -> None:
    before = set(threading.enumerate())
    clock = RealClock()

    def callback() -> None:
        pass

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        timers = [clock.schedule(3600, callback) for _ in range(10_000)]
        used = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    try:
        assert len(new_threads(before)) <= 1
        assert used < 5_000_000, f"{used} bytes for 10,000 timers"
        assert all(timer.pending for timer in timers)
    finally:
        clock.close()
    assert new_threads(before) == set()
    assert all(timer.cancelled for timer in timers)


def test_cancelled_timers_are_compacted_out_of_the_heap(clock: RealClock) -> None:
    timers = [clock.schedule(3600, lambda: None) for _ in range(5000)]
    for timer in timers[:4000]:
        assert timer.cancel()
    assert len(clock._heap) < 5000  # rebuilt once most entries were dead
    assert sum(1 for _, _, timer in clock._heap if timer.pending) == 1000
