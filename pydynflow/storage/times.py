"""Times as storage carries them: integer microseconds in snapshots, text or naive UTC in rows.

Snapshots cross to the writer process pickled, and an aware datetime costs pickle far more
than an int, so they carry microseconds since the epoch (`micros`). The writer turns those
into what each dialect's columns hold: SQLite's text (`sqlite_text`, made from a cache of
whole seconds, byte-for-byte what ``datetime.isoformat`` would write) or PostgreSQL's naive
UTC datetimes (`naive_from_micros`). `sqlite_datetime` and `naive_utc` do the same for
datetimes written directly (output chunks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "EPOCH",
    "MICROSECOND",
    "from_micros",
    "iso",
    "micros",
    "naive_from_micros",
    "naive_utc",
    "sqlite_datetime",
    "sqlite_text",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The epoch `micros` counts from (aware, UTC)."""
MICROSECOND = timedelta(microseconds=1)
"""One microsecond: ``(moment - EPOCH) // MICROSECOND`` is `micros` of an aware moment."""
_NAIVE_EPOCH = datetime(1970, 1, 1)


def micros(value: datetime | None) -> int | None:
    """Return ``value`` (naive means UTC) as microseconds since the epoch; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // MICROSECOND


def from_micros(value: int | None) -> datetime | None:
    """Return the aware UTC datetime of `micros`; None stays None."""
    return None if value is None else EPOCH + timedelta(microseconds=value)


# The writer turns thousands of times a second into text, nearly all within the same few
# seconds: the text of each whole second is made once (by `datetime.isoformat`, so the
# result is the same to the byte) and the microseconds appended.
_SECOND_TEXT: dict[int, str] = {}
_SECOND_TEXT_LIMIT = 4096


def _second_text(second: int) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SS`` for ``second`` (seconds since the epoch, UTC)."""
    text = _SECOND_TEXT.get(second)
    if text is None:
        if len(_SECOND_TEXT) >= _SECOND_TEXT_LIMIT:
            _SECOND_TEXT.clear()
        text = (EPOCH + timedelta(seconds=second)).replace(tzinfo=None).isoformat()
        _SECOND_TEXT[second] = text
    return text


def iso(value: int) -> str:
    """Return `micros` as ISO text, as ``datetime.isoformat`` writes an aware UTC time."""
    second, micro = divmod(value, 1_000_000)
    if micro:
        return f"{_second_text(second)}.{micro:06d}+00:00"
    return f"{_second_text(second)}+00:00"


def sqlite_text(value: int | None) -> str | None:
    """Return `micros` as a SQLite datetime column holds it: ``YYYY-MM-DD HH:MM:SS.ffffff``
    (UTC, as `sqlite_datetime` writes it); None stays None."""
    if value is None:
        return None
    second, micro = divmod(value, 1_000_000)
    text = _second_text(second)
    return f"{text[:10]} {text[11:]}.{micro:06d}"


def naive_from_micros(value: int | None) -> datetime | None:
    """Return `micros` as a naive UTC datetime (how PostgreSQL's columns take it)."""
    return None if value is None else _NAIVE_EPOCH + timedelta(microseconds=value)


def sqlite_datetime(value: datetime | None) -> str | None:
    """Return ``value`` (naive means UTC) as a SQLite datetime column holds it."""
    if value is None:
        return None
    if value.tzinfo is not None:
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.isoformat(" ", "microseconds")[:26]  # drop "+00:00"
    return value.isoformat(" ", "microseconds")


def naive_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as a naive UTC datetime (naive values are taken as UTC already)."""
    if value is None or value.tzinfo is None:
        return value
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None)
    return value.astimezone(UTC).replace(tzinfo=None)
