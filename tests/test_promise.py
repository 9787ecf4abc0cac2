"""`Promise`: the light future behind `Triggered` and the world's replies."""

from __future__ import annotations

import threading

import pytest

from pydynflow.promise import Promise


def test_result_set_from_another_thread() -> None:
    promise: Promise[int] = Promise()
    threading.Thread(target=promise.set_result, args=(42,)).start()
    assert promise.result(timeout=10) == 42
    assert promise.done() and promise.exception() is None
    assert promise.result() == 42  # any number of readers


def test_error_is_raised_to_every_waiter() -> None:
    promise: Promise[int] = Promise()
    promise.set_exception(KeyError("gone"))
    for _ in range(2):
        with pytest.raises(KeyError):
            promise.result()
    assert isinstance(promise.exception(), KeyError)


def test_timeout() -> None:
    promise: Promise[int] = Promise()
    with pytest.raises(TimeoutError):
        promise.result(timeout=0)
    assert not promise.done()


def test_callbacks_run_once_set_or_at_once_if_already() -> None:
    promise: Promise[str] = Promise()
    seen: list[str] = []
    promise.add_done_callback(lambda done: seen.append(done.result()))
    promise.set_result("a")
    promise.add_done_callback(lambda done: seen.append("late " + done.result()))
    assert seen == ["a", "late a"]


def test_answered_only_once() -> None:
    promise: Promise[int] = Promise()
    promise.set_result(1)
    with pytest.raises(RuntimeError, match="only once"):
        promise.set_exception(ValueError())


def test_a_promise_nobody_waits_for_makes_no_lock() -> None:
    answered: Promise[int] = Promise()
    seen: list[int] = []
    answered.add_done_callback(lambda p: seen.append(p.result()))
    answered.set_result(7)
    assert answered.result() == 7 and seen == [7]
    assert answered._lock is None  # read after its answer: no wait, no lock


def test_waking_later_holds_the_wake_up_but_not_the_answer() -> None:
    from pydynflow.promise import waking_later

    first: Promise[int] = Promise()
    second: Promise[int] = Promise()
    for promise in (first, second):  # a wait that times out leaves the waiters' lock made
        with pytest.raises(TimeoutError):
            promise.result(0)
    with waking_later():
        first.set_result(1)
        with waking_later():  # nested: the outer block wakes
            second.set_exception(ValueError("no"))
        assert first.done() and first.result(0) == 1  # the answer is there at once
        assert isinstance(second.exception(0), ValueError)
        assert first._lock.locked() and second._lock.locked()  # a waiter would still sleep
    assert not first._lock.locked() and not second._lock.locked()  # woken at the end


def test_a_waiter_blocked_before_waking_later_gets_its_answer_after_it() -> None:
    from pydynflow.promise import waking_later

    promise: Promise[str] = Promise()
    answers: list[str] = []
    waiter = threading.Thread(target=lambda: answers.append(promise.result(30)))
    waiter.start()
    with waking_later():
        promise.set_result("done")
    waiter.join(30)
    assert answers == ["done"]
