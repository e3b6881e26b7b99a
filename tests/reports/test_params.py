"""Report ranges: defaults, inclusive bare dates, calendar periods, readable errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing_engine.errors import ValidationError
from billing_engine.reports.params import build_query

NOW = datetime(2026, 3, 17, 12, 0, tzinfo=UTC)


def d(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def test_default_range_is_the_last_twelve_months_including_this_one() -> None:
    q = build_query(now=NOW)
    assert (q.start, q.end) == (d(2025, 4, 1), d(2026, 4, 1))
    assert len(q.periods()) == 12


def test_a_bare_to_date_includes_that_whole_day() -> None:
    q = build_query(start="2026-01-01", end="2026-03-31", now=NOW)
    assert q.end == d(2026, 4, 1)
    assert q.periods() == [(d(2026, 1, 1), d(2026, 2, 1)), (d(2026, 2, 1), d(2026, 3, 1)), (d(2026, 3, 1), d(2026, 4, 1))]


def test_a_to_with_a_time_is_exclusive_and_partial_periods_are_clipped() -> None:
    q = build_query(start="2026-01-15T00:00:00Z", end="2026-03-10T00:00:00Z", now=NOW)
    assert q.periods() == [(d(2026, 1, 15), d(2026, 2, 1)), (d(2026, 2, 1), d(2026, 3, 1)), (d(2026, 3, 1), d(2026, 3, 10))]


@pytest.mark.parametrize("period,expected", [
    ("week", [(d(2026, 1, 1), d(2026, 1, 5)), (d(2026, 1, 5), d(2026, 1, 12)), (d(2026, 1, 12), d(2026, 1, 15))]),
    ("quarter", [(d(2026, 1, 1), d(2026, 1, 15))]),
    ("all", [(d(2026, 1, 1), d(2026, 1, 15))]),
])
def test_calendar_periods(period: str, expected: list[tuple[datetime, datetime]]) -> None:
    assert build_query(start="2026-01-01", end="2026-01-14", period=period, now=NOW).periods() == expected


def test_quarters_and_years_align_to_the_calendar() -> None:
    q = build_query(start="2025-11-01", end="2026-12-31", period="quarter", now=NOW)
    assert [s.month for s, _ in q.periods()] == [11, 1, 4, 7, 10]
    assert [s.year for s, _ in build_query(start="2024-06-01", end="2026-01-31", period="year", now=NOW).periods()] == [
        2024, 2025, 2026]


@pytest.mark.parametrize("kwargs,field", [
    ({"start": "2026-02-30"}, "from"),
    ({"end": "yesterday"}, "to"),
    ({"start": "2026-03-01", "end": "2026-02-01"}, "from"),
    ({"period": "fortnight"}, "period"),
    ({"by": "tier"}, "by"),
    ({"currency": "XYZ"}, "currency"),
    ({"start": "1900-01-01", "period": "day"}, "from"),
    ({"start": "2000-01-01", "period": "day"}, "period"),
])
def test_bad_parameters_name_the_field(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        build_query(now=NOW, **kwargs)
    assert err.value.field == field


def test_currency_and_grouping_are_normalised() -> None:
    q = build_query(currency=" usd ", by=" Plan ", now=NOW)
    assert (q.currency, q.by) == ("USD", "plan")
