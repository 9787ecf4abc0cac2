"""Snapshots carry times as integer microseconds: exact both ways, naive meaning UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from pydynflow.storage.times import (
    from_micros,
    iso,
    micros,
    naive_from_micros,
    naive_utc,
    sqlite_datetime,
    sqlite_text,
)

moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# Also before the epoch (negative microseconds) and on whole seconds (no fraction).
any_moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
whole_seconds = any_moments.map(lambda moment: moment.replace(microsecond=0))


@given(moments)
def test_micros_round_trip_is_exact(moment: datetime) -> None:
    assert from_micros(micros(moment)) == moment
    assert from_micros(micros(moment)).tzinfo is UTC  # type: ignore[union-attr]


def test_naive_means_utc_and_other_zones_convert() -> None:
    moment = datetime(2026, 11, 26, 21, 0, 0, 123456, tzinfo=UTC)
    assert micros(moment.replace(tzinfo=None)) == micros(moment)
    paris = moment.astimezone(timezone(timedelta(hours=1)))
    assert micros(paris) == micros(moment)
    assert micros(None) is None and from_micros(None) is None


@given(st.one_of(any_moments, whole_seconds))
def test_writer_time_texts_match_datetime_formatting(moment: datetime) -> None:
    value = micros(moment)
    assert iso(value) == moment.isoformat()  # type: ignore[arg-type]
    assert sqlite_text(value) == sqlite_datetime(moment)
    assert naive_from_micros(value) == naive_utc(moment)


def test_writer_time_texts_stay_right_past_the_cache_limit() -> None:
    start = datetime(2026, 11, 26, tzinfo=UTC)
    for second in range(0, 10_000, 7):  # more distinct seconds than the cache keeps
        moment = start + timedelta(seconds=second, microseconds=second)
        assert sqlite_text(micros(moment)) == sqlite_datetime(moment)
    assert sqlite_text(None) is None and naive_from_micros(None) is None
