"""ManagedClock: virtual time that fires timers in the calling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import pytest

from pydynflow.clock import Clock, ClockClosedError
from pydynflow.testing.clock import ManagedClock


def recorder(clock: ManagedClock, log: list[tuple[str, float]], name: str) -> Callable[[], None]:
    return lambda: log.append((name, clock.now()))


def test_managed_clock_implements_the_protocol_and_starts_at_zero() -> None:
    clock = ManagedClock()
    assert isinstance(clock, Clock)
    assert clock.now() == 0.0
    assert ManagedClock(start=100).now() == 100.0


def test_advance_fires_due_timers_in_order_and_sets_now() -> None:
    before = set(threading.enumerate())
    clock = ManagedClock()
    log: list[tuple[str, float]] = []
    a = clock.schedule(0.3, recorder(clock, log, "a"))
    clock.schedule(0.1, recorder(clock, log, "b"))
    clock.schedule(0.2, recorder(clock, log, "c"))
    late = clock.schedule(5, recorder(clock, log, "late"))
    assert {t for t in threading.enumerate() if t not in before} == set()  # no threads
    assert log == []  # nothing fires before an advance

    assert clock.advance(0.25) == 2
    assert log == [("b", 0.1), ("c", 0.2)]
    assert clock.now() == 0.25

    assert clock.advance(0.05) == 1
    assert log[-1] == ("a", a.due)
    assert a.due == pytest.approx(0.3)
    assert clock.now() == pytest.approx(0.3)
    assert clock.pending() == [late]

    assert clock.advance(10) == 1
    assert log[-1] == ("late", 5.0)
    assert clock.now() == pytest.approx(10.3)
    assert clock.advance(1) == 0
    assert clock.now() == pytest.approx(11.3)


def test_ties_fire_in_scheduling_order() -> None:
    clock = ManagedClock()
    order: list[int] = []
    for index in range(10):
        clock.schedule(1, partial(order.append, index))
    clock.schedule(0.5, lambda: order.append(-1))
    assert clock.advance(1) == 11
    assert order == [-1, *range(10)]


def test_zero_and_negative_delays_fire_on_the_next_advance() -> None:
    clock = ManagedClock(start=3)
    log: list[tuple[str, float]] = []
    zero = clock.schedule(0, recorder(clock, log, "zero"))
    negative = clock.schedule(-2, recorder(clock, log, "negative"))
    assert zero.due == negative.due == 3.0
    assert log == []
    assert clock.advance(0) == 2
    assert log == [("zero", 3.0), ("negative", 3.0)]


def test_timers_armed_by_callbacks_fire_if_due_within_the_window() -> None:
    clock = ManagedClock()
    log: list[tuple[str, float]] = []

    def first() -> None:
        log.append(("first", clock.now()))
        clock.schedule(2, recorder(clock, log, "inside"))  # due at 3
        clock.schedule(0, recorder(clock, log, "immediately"))  # due at 1
        clock.schedule(10, recorder(clock, log, "outside"))  # due at 11

    clock.schedule(1, first)
    assert clock.advance(5) == 3
    assert log == [("first", 1.0), ("immediately", 1.0), ("inside", 3.0)]
    assert clock.now() == 5.0
    assert [timer.due for timer in clock.pending()] == [11.0]


def test_pending_lists_armed_timers_sorted_by_due_time() -> None:
    clock = ManagedClock()
    c = clock.schedule(3, lambda: None)
    a = clock.schedule(1, lambda: None)
    b1 = clock.schedule(2, lambda: None)
    b2 = clock.schedule(2, lambda: None)
    gone = clock.schedule(1.5, lambda: None)
    gone.cancel()
    assert clock.pending() == [a, b1, b2, c]
    clock.advance(1)
    assert clock.pending() == [b1, b2, c]
    assert a.fired and not a.pending


def test_cancel() -> None:
    clock = ManagedClock()
    fired: list[str] = []
    timer = clock.schedule(1, lambda: fired.append("cancelled"))
    sentinel = clock.schedule(2, lambda: fired.append("sentinel"))
    assert timer.cancel() is True
    assert timer.cancel() is False
    assert timer.cancelled and not timer.fired
    assert clock.advance(3) == 1
    assert fired == ["sentinel"]
    assert sentinel.cancel() is False  # already fired


def test_callback_may_cancel_a_later_timer() -> None:
    clock = ManagedClock()
    fired: list[str] = []
    victim = clock.schedule(2, lambda: fired.append("victim"))
    clock.schedule(1, lambda: fired.append(f"cancel={victim.cancel()}"))
    assert clock.advance(5) == 1
    assert fired == ["cancel=True"]


def test_advance_to_next() -> None:
    clock = ManagedClock()
    log: list[tuple[str, float]] = []
    assert clock.advance_to_next() is False
    assert clock.now() == 0.0
    clock.schedule(7, recorder(clock, log, "b"))
    clock.schedule(4, recorder(clock, log, "a"))

    assert clock.advance_to_next() is True
    assert log == [("a", 4.0)]
    assert clock.now() == 4.0
    assert clock.advance_to_next() is True
    assert log == [("a", 4.0), ("b", 7.0)]
    assert clock.now() == 7.0
    assert clock.advance_to_next() is False


def test_advance_all_fires_everything_including_chains() -> None:
    clock = ManagedClock()
    hops: list[float] = []

    def hop() -> None:
        hops.append(clock.now())
        if len(hops) < 5:
            clock.schedule(1, hop)

    clock.schedule(1, hop)
    assert clock.advance_all() == 5
    assert hops == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.pending() == []


def test_advance_all_raises_after_max_steps_on_a_ping_loop() -> None:
    clock = ManagedClock()
    count = [0]

    def ping() -> None:
        count[0] += 1
        clock.schedule(1, ping)

    clock.schedule(1, ping)
    with pytest.raises(RuntimeError, match="50 steps"):
        clock.advance_all(max_steps=50)
    assert count[0] == 50
    assert clock.now() == 50.0


def test_polling_intervals_act_11() -> None:
    """A callback that re-arms itself with intervals [1, 2] gives due gaps of 1, then 2."""
    clock = ManagedClock()
    intervals = [1, 2]
    dues: list[float] = []

    def poll() -> None:
        dues.append(clock.now())
        if intervals:
            clock.schedule(intervals.pop(0), poll)

    clock.schedule(0.5, poll)
    assert clock.advance_all() == 3
    assert [later - earlier for earlier, later in zip(dues, dues[1:], strict=False)] == [1, 2]


def test_polls_and_timeout_act_12() -> None:
    """Polls every 2 s, timeout at 5 s: three timers fire before nothing is pending."""
    clock = ManagedClock()
    events: list[tuple[str, float]] = []
    state = {"done": False}

    def poll() -> None:
        if state["done"]:
            return
        events.append(("poll", clock.now()))
        clock.schedule(2, poll)

    def timeout() -> None:
        events.append(("timeout", clock.now()))
        state["done"] = True
        for timer in clock.pending():
            timer.cancel()

    clock.schedule(5, timeout)
    clock.schedule(2, poll)
    assert clock.advance_all() == 3
    assert events == [("poll", 2.0), ("poll", 4.0), ("timeout", 5.0)]


def test_raising_callback_propagates_and_leaves_the_rest_pending() -> None:
    clock = ManagedClock()

    def boom() -> None:
        raise ValueError("boom")

    clock.schedule(1, boom)
    later = clock.schedule(2, lambda: None)
    with pytest.raises(ValueError, match="boom"):
        clock.advance(5)
    assert clock.now() == 1.0
    assert clock.pending() == [later]
    assert clock.advance(4) == 1


def test_invalid_arguments() -> None:
    clock = ManagedClock()
    with pytest.raises(TypeError, match="callable"):
        clock.schedule(1, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clock.schedule(float("inf"), lambda: None)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(TypeError):
        clock.advance("1")  # type: ignore[arg-type]
    assert clock.pending() == []


def test_close_cancels_pending_timers_and_refuses_new_ones() -> None:
    clock = ManagedClock()
    timer = clock.schedule(1, lambda: None)
    clock.close()
    clock.close()
    assert timer.cancelled
    assert clock.pending() == []
    with pytest.raises(ClockClosedError):
        clock.schedule(1, lambda: None)
    assert clock.advance(2) == 0


def test_schedule_from_many_threads() -> None:
    clock = ManagedClock()
    fired: list[tuple[int, int]] = []
    barrier = threading.Barrier(4)

    def arm(thread_index: int) -> None:
        barrier.wait(5)
        for index in range(50):
            clock.schedule(index % 7, partial(fired.append, (thread_index, index)))

    workers = [threading.Thread(target=arm, args=(index,)) for index in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    assert len(clock.pending()) == 200
    assert clock.advance(10) == 200
    assert sorted(fired) == [(t, i) for t in range(4) for i in range(50)]
