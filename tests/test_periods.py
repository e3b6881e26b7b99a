from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_engine.errors import ValidationError
from billing_engine.periods import (
    MAX_INTERVAL_COUNT,
    Interval,
    boundary,
    ensure_utc,
    monthly_amount,
    months_per_period,
    parse_datetime,
    period_bounds,
    validate_interval,
)

PROPS = settings(max_examples=250, deadline=None)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- boundaries -------------------------------------------------------------------------


def test_monthly_anchor_on_31st_clamps_then_recovers() -> None:
    anchor = utc(2026, 1, 31, 10, 30)
    got = [boundary(anchor, Interval.MONTH, 1, n) for n in range(6)]
    assert got == [
        utc(2026, 1, 31, 10, 30),
        utc(2026, 2, 28, 10, 30),
        utc(2026, 3, 31, 10, 30),
        utc(2026, 4, 30, 10, 30),
        utc(2026, 5, 31, 10, 30),
        utc(2026, 6, 30, 10, 30),
    ]


def test_monthly_anchor_on_31st_gets_feb_29_in_leap_year() -> None:
    assert boundary(utc(2028, 1, 31), Interval.MONTH, 1, 1) == utc(2028, 2, 29)


def test_boundary_is_not_chained_from_previous_end() -> None:
    # Chaining "+1 month" from Feb 28 would give Mar 28; the anchor says Mar 31.
    anchor = utc(2026, 1, 31)
    feb = boundary(anchor, Interval.MONTH, 1, 1)
    assert feb + relativedelta(months=1) == utc(2026, 3, 28)
    assert boundary(anchor, Interval.MONTH, 1, 2) == utc(2026, 3, 31)


def test_yearly_feb_29_anchor_returns_to_feb_29_in_leap_years() -> None:
    anchor = utc(2024, 2, 29, 8)
    got = [boundary(anchor, Interval.YEAR, 1, n) for n in range(5)]
    assert got == [utc(2024, 2, 29, 8), utc(2025, 2, 28, 8), utc(2026, 2, 28, 8),
                   utc(2027, 2, 28, 8), utc(2028, 2, 29, 8)]


def test_quarterly_and_multi_year_counts() -> None:
    assert boundary(utc(2026, 11, 30), Interval.MONTH, 3, 1) == utc(2027, 2, 28)
    assert boundary(utc(2026, 11, 30), Interval.MONTH, 3, 2) == utc(2027, 5, 30)
    assert boundary(utc(2024, 2, 29), Interval.YEAR, 2, 1) == utc(2026, 2, 28)
    assert boundary(utc(2024, 2, 29), Interval.YEAR, 2, 2) == utc(2028, 2, 29)


def test_day_and_week_are_exact_multiples() -> None:
    anchor = utc(2026, 2, 27, 23, 59, 59)
    assert boundary(anchor, Interval.DAY, 1, 2) == utc(2026, 3, 1, 23, 59, 59)
    assert boundary(anchor, Interval.DAY, 10, 3) == anchor + timedelta(days=30)
    assert boundary(anchor, Interval.WEEK, 2, 5) == anchor + timedelta(weeks=10)


def test_boundary_zero_is_anchor_in_utc() -> None:
    anchor = datetime(2026, 1, 31, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert boundary(anchor, Interval.MONTH, 1, 0) == utc(2026, 1, 30, 23)
    assert boundary(anchor, Interval.MONTH, 1, 0).tzinfo is UTC
    # Clamping follows the UTC calendar: anchor is Jan 30 23:00 UTC.
    assert boundary(anchor, Interval.MONTH, 1, 1) == utc(2026, 2, 28, 23)


def test_boundary_accepts_interval_strings() -> None:
    assert boundary(utc(2026, 1, 31), "month", 1, 1) == utc(2026, 2, 28)  # type: ignore[arg-type]


def test_period_bounds_are_consecutive_boundaries() -> None:
    anchor = utc(2026, 1, 31)
    assert period_bounds(anchor, Interval.MONTH, 1, 1) == (utc(2026, 2, 28), utc(2026, 3, 31))


def test_naive_anchor_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        boundary(datetime(2026, 1, 31), Interval.MONTH, 1, 1)
    assert exc.value.field == "anchor"


@pytest.mark.parametrize("n", [-1, True, 1.0])
def test_bad_period_index_is_rejected(n: object) -> None:
    with pytest.raises(ValidationError):
        boundary(utc(2026, 1, 1), Interval.MONTH, 1, n)  # type: ignore[arg-type]


def test_boundary_past_year_9999_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        boundary(utc(2026, 1, 1), Interval.YEAR, 5, 10_000)
    with pytest.raises(ValidationError):
        boundary(utc(2026, 1, 1), Interval.DAY, 365, 10_000)


# --- property tests against dateutil ----------------------------------------------------

anchors = st.one_of(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 12, 31),
                 timezones=st.just(UTC)),
    st.builds(
        lambda y, m, d, h, mi: datetime(y, m, d, h, mi, tzinfo=UTC),
        st.integers(1990, 2100), st.sampled_from([1, 3, 5, 7, 8, 10, 12]),
        st.sampled_from([28, 29, 30, 31]), st.integers(0, 23), st.integers(0, 59),
    ),
    st.builds(lambda y, h: datetime(y, 2, 29, h, tzinfo=UTC),
              st.sampled_from([1992, 2000, 2024, 2028, 2096]), st.integers(0, 23)),
)


@st.composite
def plans(draw: st.DrawFn) -> tuple[Interval, int]:
    iv = draw(st.sampled_from(list(Interval)))
    count = draw(st.one_of(st.integers(1, 3), st.integers(1, MAX_INTERVAL_COUNT[iv])))
    return iv, count


def oracle(anchor: datetime, iv: Interval, count: int, n: int) -> datetime:
    if iv is Interval.DAY:
        return anchor + relativedelta(days=n * count)
    if iv is Interval.WEEK:
        return anchor + relativedelta(weeks=n * count)
    if iv is Interval.MONTH:
        return anchor + relativedelta(months=n * count)
    return anchor + relativedelta(years=n * count)


@PROPS
@given(anchor=anchors, plan=plans(), n=st.integers(0, 300))
def test_boundary_matches_relativedelta_from_anchor(
    anchor: datetime, plan: tuple[Interval, int], n: int
) -> None:
    iv, count = plan
    if iv is Interval.YEAR:
        n = min(n, 60)  # stay below year 9999 with count 5
    got = boundary(anchor, iv, count, n)
    assert got == oracle(anchor, iv, count, n)
    assert got.tzinfo is UTC


@PROPS
@given(anchor=anchors, plan=plans(), n=st.integers(0, 300))
def test_boundaries_strictly_increase_and_keep_time_of_day(
    anchor: datetime, plan: tuple[Interval, int], n: int
) -> None:
    iv, count = plan
    if iv is Interval.YEAR:
        n = min(n, 60)
    start, end = period_bounds(anchor, iv, count, n)
    assert start < end
    assert start.timetz() == anchor.timetz() and end.timetz() == anchor.timetz()
    if iv in (Interval.MONTH, Interval.YEAR):
        assert start.day <= anchor.day and end.day <= anchor.day


# --- validate_interval ------------------------------------------------------------------


def test_validate_interval_normalises() -> None:
    assert validate_interval(" Month ", 3) == (Interval.MONTH, 3)
    assert validate_interval(Interval.YEAR, 1) == (Interval.YEAR, 1)


@pytest.mark.parametrize("bad", ["monthly", "", "fortnight", None, 1])
def test_validate_interval_rejects_unknown_interval(bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_interval(bad, 1)  # type: ignore[arg-type]
    assert exc.value.field == "interval"


@pytest.mark.parametrize(
    ("interval", "count"),
    [("day", 0), ("day", 366), ("week", 53), ("month", 25), ("year", 6), ("month", -1),
     ("month", 1.0), ("month", True), ("month", "1")],
)
def test_validate_interval_rejects_bad_counts(interval: str, count: object) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_interval(interval, count)  # type: ignore[arg-type]
    assert exc.value.field == "interval_count"


def test_validate_interval_accepts_the_caps() -> None:
    for iv, cap in MAX_INTERVAL_COUNT.items():
        assert validate_interval(iv.value, cap) == (iv, cap)


# --- MRR normalisation ------------------------------------------------------------------


def test_months_per_period_convention() -> None:
    assert months_per_period(Interval.MONTH, 3) == 3
    assert months_per_period(Interval.YEAR, 2) == 24
    assert months_per_period(Interval.DAY, 1) == Fraction(12) / Fraction("365.25")
    assert months_per_period(Interval.WEEK, 1) == 7 * months_per_period(Interval.DAY, 1)
    assert isinstance(months_per_period(Interval.WEEK, 1), Fraction)


@PROPS
@given(count=st.integers(1, 52))
def test_a_week_is_seven_days_for_mrr(count: int) -> None:
    assert months_per_period(Interval.WEEK, count) == months_per_period(Interval.DAY, 7 * count)


@pytest.mark.parametrize(
    ("amount", "interval", "count", "expected"),
    [
        (1000, Interval.MONTH, 1, 1000),
        (3000, Interval.MONTH, 3, 1000),
        (12000, Interval.YEAR, 1, 1000),
        (100, Interval.YEAR, 1, 8),  # 8.33
        (150, Interval.YEAR, 1, 12),  # 12.5 -> 12 (half-even)
        (450, Interval.YEAR, 1, 38),  # 37.5 -> 38 (half-even)
        (1000, Interval.WEEK, 1, 4348),  # 1000 * 1461 / 336 = 4348.21
        (100, Interval.DAY, 1, 3044),  # 100 * 365.25 / 12 = 3043.75
    ],
)
def test_monthly_amount(amount: int, interval: Interval, count: int, expected: int) -> None:
    assert monthly_amount(amount, interval, count) == expected


def test_monthly_amount_rejects_float() -> None:
    with pytest.raises(ValidationError):
        monthly_amount(10.0, Interval.MONTH, 1)  # type: ignore[arg-type]


# --- ensure_utc / parse_datetime --------------------------------------------------------


def test_ensure_utc_converts_offsets() -> None:
    dt = datetime(2026, 1, 31, 2, tzinfo=timezone(timedelta(hours=3)))
    got = ensure_utc(dt)
    assert got == utc(2026, 1, 30, 23) and got.tzinfo is UTC


def test_ensure_utc_rejects_naive_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        ensure_utc(datetime(2026, 1, 31), "start_at")
    assert exc.value.field == "start_at"
    assert "timezone-aware" in str(exc.value)


@pytest.mark.parametrize("bad", [date(2026, 1, 31), "2026-01-31", 0, None])
def test_ensure_utc_rejects_non_datetimes(bad: object) -> None:
    with pytest.raises(ValidationError):
        ensure_utc(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31", utc(2026, 1, 31)),
        (" 2026-01-31 ", utc(2026, 1, 31)),
        ("2026-01-31T10:00:00Z", utc(2026, 1, 31, 10)),
        ("2026-01-31T10:00:00+00:00", utc(2026, 1, 31, 10)),
        ("2026-01-31T10:00:00", utc(2026, 1, 31, 10)),
        ("2026-01-31 10:00", utc(2026, 1, 31, 10)),
        ("2026-01-31T12:00:00+02:00", utc(2026, 1, 31, 10)),
        ("2026-01-31T10:00:00.250Z", utc(2026, 1, 31, 10, 0, 0, 250000)),
    ],
)
def test_parse_datetime_accepts_iso_8601(text: str, expected: datetime) -> None:
    got = parse_datetime(text)
    assert got == expected and got.tzinfo is UTC


@pytest.mark.parametrize("bad", ["", "  ", "yesterday", "2026-02-30", "31/01/2026",
                                 "2026-01-31T25:00", None, 1738281600])
def test_parse_datetime_rejects_garbage_naming_the_field(bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_datetime(bad, field="--at")  # type: ignore[arg-type]
    assert exc.value.field == "--at"
