"""`Backoff`: the supervisor's restart delays."""

from __future__ import annotations

import pytest

from pydynflow.daemon import Backoff


def test_delays_double_up_to_the_most_while_children_die_young() -> None:
    backoff = Backoff()
    delays = [backoff.next(ran=1.0) for _ in range(12)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


def test_a_child_that_ran_long_enough_starts_the_series_again() -> None:
    backoff = Backoff(first=0.1, most=30.0, reset_after=60.0)
    assert [backoff.next(ran=0.5) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff.next(ran=59.9) == 1.6
    assert backoff.next(ran=60.0) == 0.1
    assert backoff.next(ran=0.0) == 0.2


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="0 < first <= most"):
        Backoff(first=0, most=1)
    with pytest.raises(ValueError, match="0 < first <= most"):
        Backoff(first=2, most=1)
