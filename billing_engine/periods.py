"""Billing periods, computed from the subscription's anchor (DESIGN invariant 3).

Period ``n`` runs from ``boundary(n)`` to ``boundary(n + 1)``; ``boundary(0)`` is the
anchor. Every boundary is computed from the anchor, never by chaining: a monthly plan
anchored on Jan 31 has boundaries Feb 28/29, Mar 31, Apr 30, ... (the day is clamped to
the target month's length, the time of day is kept). Years do the same, so a Feb 29
anchor gives Feb 28 in common years and Feb 29 again in leap years. Day and week
intervals are exact multiples of 24 h / 7 days.

All datetimes are timezone-aware UTC; naive datetimes are rejected.
"""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from billing_engine.errors import ValidationError
from billing_engine.money import round_half_even


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


# Largest interval_count per interval: at most ~5 years per period, whatever the unit.
MAX_INTERVAL_COUNT: dict[Interval, int] = {
    Interval.DAY: 365,
    Interval.WEEK: 52,
    Interval.MONTH: 24,
    Interval.YEAR: 5,
}

# MRR convention: a month is an average Gregorian month, 365.25 / 12 days. A day is
# therefore 12 / 365.25 = 48 / 1461 of a month and a week exactly 7 days' worth
# (336 / 1461 ~ 0.22998 months, i.e. ~4.348 weeks per month).
_MONTHS_PER_DAY = Fraction(48, 1461)


def validate_interval(interval: str, count: int) -> tuple[Interval, int]:
    """Check a plan's interval and count; return them as ``(Interval, int)``.

    Caps on ``count``: day 365, week 52, month 24, year 5.
    """
    if type(interval) is Interval and type(count) is int and 1 <= count <= MAX_INTERVAL_COUNT[interval]:
        return interval, count  # the common case, checked cheaply (the run-cycle asks per renewal)
    choices = ", ".join(i.value for i in Interval)
    if not isinstance(interval, str):
        raise ValidationError(f"interval must be one of {choices}", field="interval")
    try:
        iv = Interval(interval.strip().lower())
    except ValueError:
        raise ValidationError(
            f"unknown interval {interval!r} (expected one of {choices})", field="interval"
        ) from None
    cap = MAX_INTERVAL_COUNT[iv]
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValidationError(
            f"interval_count must be a whole number, not {type(count).__name__}",
            field="interval_count",
        )
    if not 1 <= count <= cap:
        raise ValidationError(
            f"interval_count must be between 1 and {cap} for interval {iv.value!r}, got {count}",
            field="interval_count",
        )
    return iv, count


def ensure_utc(dt: datetime, field: str = "at") -> datetime:
    """Return an aware datetime converted to UTC; reject naive ones (and non-datetimes)."""
    if type(dt) is datetime and dt.tzinfo is UTC:  # the common case (every period boundary)
        return dt
    if not isinstance(dt, datetime):
        raise ValidationError(
            f"must be a timezone-aware datetime, not {type(dt).__name__}", field=field
        )
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValidationError(
            f"must be timezone-aware (UTC), got naive datetime {dt.isoformat()}", field=field
        )
    return dt.astimezone(UTC)


def parse_datetime(text: str, field: str = "at") -> datetime:
    """Parse ISO-8601 text into an aware UTC datetime.

    "2026-01-31" means midnight UTC; a string without an offset is taken as UTC;
    "Z" and "+hh:mm" offsets are honoured and converted to UTC.
    """
    hint = "expected ISO-8601 such as 2026-01-31 or 2026-01-31T10:00:00Z"
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(f"missing date/time ({hint})", field=field)
    raw = text.strip()
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"invalid date/time {raw!r} ({hint})", field=field) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 / 9999-12-31T23:59-01:00
        raise ValidationError(f"date/time {raw!r} is out of range", field=field) from None


def boundary(anchor: datetime, interval: Interval, count: int, n: int) -> datetime:
    """The ``n``-th period boundary (``n >= 0``; ``boundary(..., 0)`` is the anchor)."""
    iv, count = validate_interval(interval, count)
    start = ensure_utc(anchor, "anchor")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValidationError(f"period index must be a non-negative integer, got {n!r}",
                              field="period_index")
    try:
        if iv in (Interval.DAY, Interval.WEEK):
            days = 7 if iv is Interval.WEEK else 1
            return start + timedelta(days=days * count * n)
        months = n * count * (12 if iv is Interval.YEAR else 1)
        year, month0 = divmod(start.year * 12 + start.month - 1 + months, 12)
        month = month0 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day)
    except (OverflowError, ValueError, calendar.IllegalMonthError):
        raise ValidationError(
            f"period {n} is beyond the supported date range", field="period_index"
        ) from None


def period_bounds(anchor: datetime, interval: Interval, count: int,
                  n: int) -> tuple[datetime, datetime]:
    """``(start, end)`` of period ``n``: ``(boundary(n), boundary(n + 1))``."""
    return boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1)


def months_per_period(interval: Interval, count: int) -> Fraction:
    """Length of one period in months, exactly (see the MRR convention above)."""
    iv, count = validate_interval(interval, count)
    if iv is Interval.MONTH:
        return Fraction(count)
    if iv is Interval.YEAR:
        return Fraction(12 * count)
    days = count * (7 if iv is Interval.WEEK else 1)
    return days * _MONTHS_PER_DAY


@functools.lru_cache(maxsize=4096)
def monthly_amount(amount_minor: int, interval: Interval, count: int) -> int:
    """A plan's per-period amount normalised to one month (MRR), rounded half-even."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise ValidationError("amount must be an integer number of minor units",
                              field="amount_minor")
    return round_half_even(Fraction(amount_minor) / months_per_period(interval, count))
