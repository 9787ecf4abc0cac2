"""Snapshots carry times as integer microseconds: exact both ways, naive meaning UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from pydynflow.storage.store import _from_micros, _micros

moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(moments)
def test_micros_round_trip_is_exact(moment: datetime) -> None:
    assert _from_micros(_micros(moment)) == moment
    assert _from_micros(_micros(moment)).tzinfo is UTC  # type: ignore[union-attr]


def test_naive_means_utc_and_other_zones_convert() -> None:
    moment = datetime(2026, 11, 26, 21, 0, 0, 123456, tzinfo=UTC)
    assert _micros(moment.replace(tzinfo=None)) == _micros(moment)
    paris = moment.astimezone(timezone(timedelta(hours=1)))
    assert _micros(paris) == _micros(moment)
    assert _micros(None) is None and _from_micros(None) is None
