"""What a report covers: a UTC date range cut into calendar periods, an optional plan split
and an optional currency filter. Parsed once here, the same way for the CLI and the API.

Dates: ``from`` is inclusive, ``to`` is exclusive when it carries a time of day; a bare date
``to`` (``2026-03-31``) includes that whole day, so ``--from 2026-01-01 --to 2026-03-31`` is
exactly Q1. Periods are calendar-aligned in UTC (months start on the 1st, weeks on Monday,
quarters on Jan/Apr/Jul/Oct 1st); the first and last ones are clipped to the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from billing_engine.errors import ValidationError
from billing_engine.money import normalize_currency
from billing_engine.periods import parse_datetime

PERIODS = ("day", "week", "month", "quarter", "year", "all")
GROUPINGS = ("plan",)
MAX_PERIODS = 1000
DEFAULT_MONTHS = 12


@dataclass(frozen=True, kw_only=True)
class ReportQuery:
    start: datetime  # inclusive, aware UTC
    end: datetime  # exclusive, aware UTC
    period: str = "month"
    by: str | None = None  # None | "plan"
    currency: str | None = None  # ISO-4217 filter, or None for every currency

    def periods(self) -> list[tuple[datetime, datetime]]:
        """``[(start, end), ...]`` covering ``[self.start, self.end)`` without gaps."""
        return period_list(self.start, self.end, self.period)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "from": iso(self.start), "to": iso(self.end), "period": self.period,
            "by": self.by, "currency": self.currency,
        }


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _month_start(dt: datetime, months_back: int = 0) -> datetime:
    y, m = divmod(dt.year * 12 + dt.month - 1 - months_back, 12)
    return datetime(y, m + 1, 1, tzinfo=UTC)


def _is_bare_date(text: str) -> bool:
    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return False
    return len(text.strip()) == 10


def _next_boundary(dt: datetime, period: str) -> datetime:
    """The first calendar boundary of ``period`` strictly after ``dt``."""
    day = datetime(dt.year, dt.month, dt.day, tzinfo=UTC)
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7 - day.weekday())
    if period == "month":
        return _month_start(dt, -1)
    if period == "quarter":
        q0 = (dt.month - 1) // 3 * 3
        return _month_start(datetime(dt.year, q0 + 1, 1, tzinfo=UTC), -3)
    if period == "year":
        return datetime(dt.year + 1, 1, 1, tzinfo=UTC)
    raise ValidationError(f"must be one of {', '.join(PERIODS)}", field="period")


def period_list(start: datetime, end: datetime, period: str) -> list[tuple[datetime, datetime]]:
    if period == "all":
        return [(start, end)]
    out: list[tuple[datetime, datetime]] = []
    cur = start
    while cur < end:
        nxt = min(_next_boundary(cur, period), end)
        out.append((cur, nxt))
        cur = nxt
        if len(out) > MAX_PERIODS:
            raise ValidationError(
                f"the range has more than {MAX_PERIODS} {period} periods; use a longer period or a shorter range",
                field="period",
            )
    return out


def calendar_start(dt: datetime, period: str) -> datetime:
    """The start of the calendar ``period`` (day, week, month, quarter, year; UTC) holding ``dt``."""
    day = datetime(dt.year, dt.month, dt.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return datetime(dt.year, (dt.month - 1) // 3 * 3 + 1, 1, tzinfo=UTC)
    if period == "year":
        return datetime(dt.year, 1, 1, tzinfo=UTC)
    raise ValidationError(f"must be one of {', '.join(PERIODS)}", field="period")


def day_aligned(q: ReportQuery) -> bool:
    """True when the range starts and ends at midnight UTC: every period boundary is then a
    day boundary, and the per-day rollups answer the report exactly."""
    return all(t.astimezone(UTC) == calendar_start(t, "day") for t in (q.start, q.end))


def period_aligned(q: ReportQuery) -> bool:
    """Day-aligned, and the first period is a whole calendar period (not clipped)."""
    return day_aligned(q) and q.period != "all" and calendar_start(q.start, q.period) == q.start.astimezone(UTC)


MIN_YEAR, MAX_YEAR = 1971, 9998


def _in_range(dt: datetime, field: str) -> datetime:
    """Refuse dates where the calendar arithmetic of a report would leave year 1..9999."""
    if not MIN_YEAR <= dt.year <= MAX_YEAR:
        raise ValidationError(f"dates must be between {MIN_YEAR} and {MAX_YEAR}, got {iso(dt)[:10]}", field=field)
    return dt


def build_query(
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    period: str | None = "month",
    by: str | None = None,
    currency: str | None = None,
    now: datetime,
) -> ReportQuery:
    """Validate raw parameters (strings from the CLI / query string) into a ReportQuery.

    Defaults: ``to`` = the start of next month (so the current month is included),
    ``from`` = twelve calendar months before that.
    """
    if isinstance(end, str) and end.strip():
        end_dt = _in_range(parse_datetime(end, "to"), "to")
        if _is_bare_date(end):
            end_dt += timedelta(days=1)
    elif isinstance(end, datetime):
        end_dt = _in_range(end.astimezone(UTC), "to")
    else:
        end_dt = _month_start(now, -1)
    if isinstance(start, str) and start.strip():
        start_dt = _in_range(parse_datetime(start, "from"), "from")
    elif isinstance(start, datetime):
        start_dt = _in_range(start.astimezone(UTC), "from")
    else:
        start_dt = _month_start(end_dt - timedelta(microseconds=1), DEFAULT_MONTHS - 1)
    if start_dt >= end_dt:
        raise ValidationError(f"must be before 'to' ({iso(end_dt)}), got {iso(start_dt)}", field="from")
    p = (period or "month").strip().lower()
    if p not in PERIODS:
        raise ValidationError(f"must be one of {', '.join(PERIODS)}, got {period!r}", field="period")
    b = by.strip().lower() if isinstance(by, str) and by.strip() else None
    if b is not None and b not in GROUPINGS:
        raise ValidationError(f"must be one of {', '.join(GROUPINGS)} (or empty), got {by!r}", field="by")
    cur = normalize_currency(currency) if isinstance(currency, str) and currency.strip() else None
    q = ReportQuery(start=start_dt, end=end_dt, period=p, by=b, currency=cur)
    q.periods()  # validates the period count
    return q
