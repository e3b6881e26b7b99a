"""The per-day rollups (migration 0013): the report facts summed per UTC day, so that a
report over a day-aligned range reads a few thousand rows whatever the number of
subscriptions, invoices or failed payments. Maintained by :mod:`rollups` (rebuild, and the
incremental fold from the events watermark): the keys a fold recomputes name the days that
changed, and each such day is summed again from its per-key rows.

- ``report_sub_events`` (per subscription) / ``report_sub_event_days``: the subscriber events
  of :func:`sql.subscriber_events` (computed over all time: an event never depends on the
  report's range), with ``act_same``, bit ``i`` set when the subscription was activated in the
  same calendar ``GRAINS[i]`` as the event -- for a range whose first period is a whole
  calendar period, "activated before this period" (revenue retention) is ``not act_same & bit``;
- ``report_paid_days``: paid invoices per day of ``paid_at``, currency and plan (revenue,
  churn's recovered invoices) -- summed straight from ``invoices`` (index on ``paid_at``);
- ``report_failed_days``: ``report_failed_invoices`` per day of the first failure, with the
  days of payment / closing, so that "as of the range end" is exact at a midnight end.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, Table, and_, case, cast, delete, func, insert, literal, or_, select, union
from sqlalchemy.engine import Connection

from billing_engine.models import (
    ReportActiveRun,
    ReportCohortCell,
    ReportCustomerCohort,
    ReportFailedDay,
    ReportPaidDay,
    ReportPayingMonth,
    ReportPayingRun,
    ReportSubEvent,
    ReportSubEventDay,
    UTCDateTime,
)
from billing_engine.periods import Interval, monthly_amount
from billing_engine.reports.params import ReportQuery, calendar_start
from billing_engine.reports.sql import invoices, plans, reason_group, subscriber_events, subscriptions, ts

sub_events_table: Table = ReportSubEvent.__table__  # type: ignore[attr-defined]
sub_event_days_table: Table = ReportSubEventDay.__table__  # type: ignore[attr-defined]
paid_days_table: Table = ReportPaidDay.__table__  # type: ignore[attr-defined]
failed_days_table: Table = ReportFailedDay.__table__  # type: ignore[attr-defined]
paying_runs_table: Table = ReportPayingRun.__table__  # type: ignore[attr-defined]
paying_months_table: Table = ReportPayingMonth.__table__  # type: ignore[attr-defined]
cohorts_table: Table = ReportCustomerCohort.__table__  # type: ignore[attr-defined]
active_runs_table: Table = ReportActiveRun.__table__  # type: ignore[attr-defined]
cohort_cells_table: Table = ReportCohortCell.__table__  # type: ignore[attr-defined]

GRAINS = ("day", "week", "month", "quarter", "year")  # act_same bit i <-> GRAINS[i]
ALL_TIME = ReportQuery(start=datetime(1970, 1, 1, tzinfo=UTC), end=datetime(9999, 12, 31, tzinfo=UTC),
                       period="all")
EVENT_COLUMNS = ("kind", "currency", "plan_id", "cancellation_kind", "reason_group", "mrr_minor", "inv_plan_id",
                 "amount_minor", "prev_plan_id", "prev_amount", "act_same")
BATCH = 20_000
ONE_DAY = timedelta(days=1)


def day_of(conn: Connection, column: Any) -> Any:
    """Midnight UTC of ``column``, stored the way a UTC timestamp column stores it."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc("day", column, "UTC")
    return func.substr(column, 1, 10).concat(literal(" 00:00:00.000000"))


def act_same(at: datetime, activated: datetime | None) -> int:
    if activated is None:
        return 0
    return sum(1 << i for i, g in enumerate(GRAINS) if calendar_start(at, g) == calendar_start(activated, g))


def plan_mrr(conn: Connection) -> dict[str, int]:
    return {p.id: monthly_amount(int(p.amount_minor), Interval(p.interval), int(p.interval_count))
            for p in conn.execute(select(plans.c.id, plans.c.amount_minor, plans.c.interval, plans.c.interval_count))}


def day_ranges(days: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted days as few [start, end) ranges (consecutive days merged)."""
    out: list[tuple[datetime, datetime]] = []
    for d in sorted(set(days)):
        if out and out[-1][1] == d:
            out[-1] = (out[-1][0], d + ONE_DAY)
        else:
            out.append((d, d + ONE_DAY))
    return out


def _in_days(column: Any, days: Iterable[datetime]) -> Any:
    return or_(*[and_(column >= ts(a), column < ts(b)) for a, b in day_ranges(days)])


def _chunks(days: set[datetime]) -> list[list[datetime]]:
    ordered = sorted(days)
    return [ordered[i:i + 200] for i in range(0, len(ordered), 200)]


# --------------------------------------------------------------------------- subscriber events

def calendar_key(conn: Connection, column: Any, grain: str) -> Any:
    """A value equal for two timestamps exactly when they fall in the same calendar ``grain``
    (UTC; weeks start on Monday, as :func:`params.calendar_start`)."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc(grain, column, "UTC")
    day = func.substr(column, 1, 10)
    if grain == "day":
        return day
    if grain == "week":
        return func.date(day, "-6 days", "weekday 1")
    if grain == "month":
        return func.substr(column, 1, 7)
    if grain == "quarter":
        return func.substr(column, 1, 4).concat(
            cast((cast(func.substr(column, 6, 2), Integer) + 2) // 3, String))
    return func.substr(column, 1, 4)


def _insert_sub_events(conn: Connection, only: Any = None) -> None:
    """Compute and insert the events of every subscription (or of ``only``), set-based."""
    ev = subscriber_events(ALL_TIME, plan_mrr(conn), only=only)
    moves = ev.c.kind.in_(("churn", "change"))
    same = sum((case((and_(moves, calendar_key(conn, ev.c.at, g) == calendar_key(conn, ev.c.activated_at, g)),
                      1 << i), else_=0) for i, g in enumerate(GRAINS)), literal(0))
    seq = func.row_number().over(partition_by=ev.c.subscription_id, order_by=(ev.c.at, ev.c.kind))
    rows = select(ev.c.subscription_id, seq, day_of(conn, ev.c.at), *[ev.c[c] for c in EVENT_COLUMNS[:-1]], same)
    conn.execute(insert(sub_events_table).from_select(["subscription_id", "seq", "day", *EVENT_COLUMNS], rows))


def _sum_sub_event_days(conn: Connection, days: set[datetime] | None = None) -> None:
    """(Re)count ``report_sub_event_days`` for these days (None: every day)."""
    e, d = sub_events_table, sub_event_days_table
    cols = [e.c.day, *[e.c[c] for c in EVENT_COLUMNS]]
    if days is None:
        conn.execute(delete(d))
        conn.execute(insert(d).from_select([c.name for c in cols] + ["n"],
                                           select(*cols, func.count()).group_by(*cols)))
        return
    for chunk in _chunks(days):
        conn.execute(delete(d).where(_in_days(d.c.day, chunk)))
        conn.execute(insert(d).from_select([c.name for c in cols] + ["n"],
                                           select(*cols, func.count()).where(_in_days(e.c.day, chunk))
                                           .group_by(*cols)))


def rebuild_sub_events(conn: Connection) -> None:
    conn.execute(delete(sub_events_table))
    _insert_sub_events(conn)
    _sum_sub_event_days(conn)


def fold_sub_events(conn: Connection, sub_ids: Any, cust_ids: Any) -> None:
    """Recompute the events of every subscription of the customers these ids name (whether a
    customer's activation is new or a reactivation depends on their other subscriptions)."""
    s = subscriptions
    custs = select(s.c.customer_id).where(s.c.id.in_(sub_ids)).union(cust_ids).subquery("fold_custs")
    only = select(s.c.id).where(s.c.customer_id.in_(select(custs.c.customer_id)))
    e = sub_events_table
    days = {calendar_start(r[0], "day") for r in conn.execute(
        select(e.c.day).where(e.c.subscription_id.in_(only)).distinct())}
    conn.execute(delete(e).where(e.c.subscription_id.in_(only)))
    _insert_sub_events(conn, only=only)
    days |= {calendar_start(r[0], "day") for r in conn.execute(
        select(e.c.day).where(e.c.subscription_id.in_(only)).distinct())}
    if days:
        _sum_sub_event_days(conn, days)


# --------------------------------------------------------------------------- paid invoices

def _sum_paid_days(conn: Connection, days: set[datetime] | None = None) -> None:
    inv, p = invoices, paid_days_table
    day = day_of(conn, inv.c.paid_at)
    late = inv.c.attempt_count > 1
    stmt_cols = [day.label("day"), inv.c.currency, inv.c.plan_id, func.count(), func.sum(inv.c.amount_paid_minor),
                 func.sum(inv.c.discount_minor), func.sum(case((late, 1), else_=0)),
                 func.sum(case((late, inv.c.amount_paid_minor), else_=0))]
    names = ["day", "currency", "plan_id", "invoices_paid", "gross_minor", "discounts_minor", "recovered_invoices",
             "recovered_minor"]
    paid = and_(inv.c.status == "paid", inv.c.paid_at.is_not(None))
    if days is None:
        conn.execute(delete(p))
        conn.execute(insert(p).from_select(names, select(*stmt_cols).where(paid)
                                           .group_by(day, inv.c.currency, inv.c.plan_id)))
        return
    for chunk in _chunks(days):
        conn.execute(delete(p).where(_in_days(p.c.day, chunk)))
        conn.execute(insert(p).from_select(names, select(*stmt_cols).where(paid, _in_days(inv.c.paid_at, chunk))
                                           .group_by(day, inv.c.currency, inv.c.plan_id)))


def rebuild_paid_days(conn: Connection) -> None:
    _sum_paid_days(conn)


def fold_paid_days(conn: Connection, inv_ids: Any) -> None:
    """Re-sum the days on which the invoices these events name were paid. (A paid invoice
    keeps its ``paid_at`` and stays paid -- refunds are their own rows -- so these are the
    only days that can change.)"""
    inv = invoices
    days = {calendar_start(r[0], "day") for r in conn.execute(
        select(inv.c.paid_at).where(inv.c.id.in_(inv_ids), inv.c.status == "paid", inv.c.paid_at.is_not(None)))}
    if days:
        _sum_paid_days(conn, days)


# --------------------------------------------------------------------------- failed invoices

def _sum_failed_days(conn: Connection, failed: Table, days: set[datetime] | None = None) -> None:
    f, s, d = failed, subscriptions, failed_days_table
    keys = [day_of(conn, f.c.first_failed_at).label("day"), f.c.currency, f.c.plan_id, f.c.decline_code,
            f.c.decline_kind, f.c.status, f.c.method,
            case((f.c.status == "paid", day_of(conn, f.c.paid_at))).label("paid_day"),
            case((f.c.status != "paid", day_of(conn, f.c.closed_at))).label("closed_day"),
            s.c.cancellation_kind, reason_group(s.c.cancellation_reason).label("reason_group")]
    stmt = (select(*keys, func.count(), func.sum(f.c.amount_minor), func.sum(f.c.paid_minor),
                   func.coalesce(func.sum(f.c.seconds), 0))
            .select_from(f.join(s, s.c.id == f.c.subscription_id)))
    names = [k.name for k in keys] + ["n", "amount_minor", "paid_minor", "seconds"]
    if days is None:
        conn.execute(delete(d))
        conn.execute(insert(d).from_select(names, stmt.group_by(*keys)))
        return
    for chunk in _chunks(days):
        conn.execute(delete(d).where(_in_days(d.c.day, chunk)))
        conn.execute(insert(d).from_select(names, stmt.where(_in_days(f.c.first_failed_at, chunk)).group_by(*keys)))


def rebuild_failed_days(conn: Connection, failed: Table) -> None:
    _sum_failed_days(conn, failed)


def failed_days_of(conn: Connection, failed: Table, where: Any) -> set[datetime]:
    return {calendar_start(r[0], "day") for r in conn.execute(select(failed.c.first_failed_at).where(where))}


def fold_failed_days(conn: Connection, failed: Table, days: set[datetime]) -> None:
    if days:
        _sum_failed_days(conn, failed, days)


# --------------------------------------------------------------------------- paying customers

def month_index(conn: Connection, column: Any) -> Any:
    """``year * 12 + month - 1`` of a UTC timestamp column."""
    if conn.dialect.name == "postgresql":
        utc = func.timezone("UTC", column)
        return cast(func.extract("year", utc), Integer) * 12 + cast(func.extract("month", utc), Integer) - 1
    return (cast(func.substr(column, 1, 4), Integer) * 12 + cast(func.substr(column, 6, 2), Integer) - 1)


def month_of(dt: datetime) -> int:
    return dt.year * 12 + dt.month - 1


def _paying_runs(conn: Connection, only: Any = None) -> Any:
    """Gaps and islands: each customer's months with a paid invoice, per (currency, plan) and per
    currency (plan ``''``), as runs of consecutive months."""
    inv = invoices
    mi = month_index(conn, inv.c.paid_at).label("mi")
    where = [inv.c.status == "paid", inv.c.paid_at.is_not(None)]
    if only is not None:
        where.append(inv.c.customer_id.in_(only))
    base = select(inv.c.customer_id, inv.c.currency, inv.c.plan_id, mi).where(*where).distinct().subquery("pm")
    both = union(select(base.c.customer_id, base.c.currency, base.c.plan_id, base.c.mi),
                 select(base.c.customer_id, base.c.currency, literal("").label("plan_id"), base.c.mi)).subquery("pm2")
    part = (both.c.customer_id, both.c.currency, both.c.plan_id)
    isl = select(*part, both.c.mi,
                 (both.c.mi - func.row_number().over(partition_by=part, order_by=both.c.mi)).label("grp"),
                 func.min(both.c.mi).over(partition_by=both.c.customer_id).label("first_ever")).subquery("isl")
    first = func.min(isl.c.mi)
    return (select(isl.c.customer_id, isl.c.currency, isl.c.plan_id, first.label("first_month"),
                   func.max(isl.c.mi).label("last_month"),
                   case((first == func.min(isl.c.first_ever), 1), else_=0).label("is_new"))
            .group_by(isl.c.customer_id, isl.c.currency, isl.c.plan_id, isl.c.grp))


RUN_COLUMNS = ["customer_id", "currency", "plan_id", "first_month", "last_month", "is_new"]


def _sum_paying_months(conn: Connection, months: set[int] | None = None) -> None:
    r, p = paying_runs_table, paying_months_table
    cells: dict[tuple[int, str, str], list[int]] = {}
    starts = select(r.c.first_month, r.c.currency, r.c.plan_id, func.count(), func.sum(r.c.is_new))
    ends = select(r.c.last_month, r.c.currency, r.c.plan_id, func.count())
    if months is None:
        conn.execute(delete(p))
        chunks: list[list[int] | None] = [None]
    else:
        ordered = sorted(months)
        chunks = [ordered[i:i + 500] for i in range(0, len(ordered), 500)]
    for chunk in chunks:
        s_q, e_q = starts, ends
        if chunk is not None:
            conn.execute(delete(p).where(p.c.month.in_(chunk)))
            s_q, e_q = starts.where(r.c.first_month.in_(chunk)), ends.where(r.c.last_month.in_(chunk))
        for m, cur, plan, n, new in conn.execute(s_q.group_by(r.c.first_month, r.c.currency, r.c.plan_id)):
            c = cells.setdefault((int(m), cur, plan), [0, 0, 0])
            c[0], c[2] = int(n), int(new or 0)
        for m, cur, plan, n in conn.execute(e_q.group_by(r.c.last_month, r.c.currency, r.c.plan_id)):
            cells.setdefault((int(m), cur, plan), [0, 0, 0])[1] = int(n)
    rows = [{"month": m, "currency": cur, "plan_id": plan, "starts": c[0], "ends": c[1], "new": c[2]}
            for (m, cur, plan), c in cells.items()]
    for i in range(0, len(rows), BATCH):
        conn.execute(insert(p), rows[i:i + BATCH])


def rebuild_paying(conn: Connection) -> None:
    conn.execute(delete(paying_runs_table))
    conn.execute(insert(paying_runs_table).from_select(RUN_COLUMNS, _paying_runs(conn)))
    _sum_paying_months(conn)


def fold_paying(conn: Connection, sub_ids: Any, inv_ids: Any, cust_ids: Any) -> None:
    """Recompute the runs of the customers of these invoices / subscriptions / customer ids."""
    inv, s, r = invoices, subscriptions, paying_runs_table
    custs = union(select(inv.c.customer_id).where(inv.c.id.in_(inv_ids)),
                  select(s.c.customer_id).where(s.c.id.in_(sub_ids)), cust_ids).subquery("paying_custs")
    only = select(custs.c.customer_id)
    months: set[int] = set()

    def touched() -> None:
        for a, b in conn.execute(select(r.c.first_month, r.c.last_month).where(r.c.customer_id.in_(only))):
            months.update((int(a), int(b)))

    touched()
    conn.execute(delete(r).where(r.c.customer_id.in_(only)))
    conn.execute(insert(r).from_select(RUN_COLUMNS, _paying_runs(conn, only=only)))
    touched()
    if months:
        _sum_paying_months(conn, months)


def paying_month_counts(q: ReportQuery, by_plan: bool) -> Any:
    """Per (currency, plan): for each month of a month-aligned range, paying customers (runs
    started up to it minus runs ended before it) and new customers (runs that start a
    customer's first payment ever in it). Columns: currency, plan_id, paying_0, new_0, ..."""
    p = paying_months_table
    j0 = month_of(q.start)
    n = len(q.periods())
    cols: list[Any] = []
    for i in range(n):
        j = j0 + i
        cols.append(func.sum(case((p.c.month <= j, p.c.starts), else_=0))
                    - func.sum(case((p.c.month < j, p.c.ends), else_=0)))
        cols.append(func.sum(case((p.c.month == j, p.c.new), else_=0)))
    stmt = select(p.c.currency, p.c.plan_id, *cols).where(p.c.month < j0 + n)
    stmt = stmt.where(p.c.plan_id != "") if by_plan else stmt.where(p.c.plan_id == "")
    if q.currency:
        stmt = stmt.where(p.c.currency == q.currency)
    return stmt.group_by(p.c.currency, p.c.plan_id)


def month_aligned(q: ReportQuery) -> bool:
    """Monthly periods over whole calendar months (start and end on the 1st, midnight UTC)."""
    return q.period == "month" and all(t.astimezone(UTC) == calendar_start(t, "month") for t in (q.start, q.end))


# --------------------------------------------------------------------------- cohorts

OPEN = 10_000_000  # a month index past any real one: "not ended"


def _cohort_rows(conn: Connection, only: Any = None) -> Any:
    """customer_id, cohort_month, currency, plan_id: each customer's first paid subscription."""
    s = subscriptions
    where = [s.c.activated_at.is_not(None)]
    if only is not None:
        where.append(s.c.customer_id.in_(only))
    ranked = (select(s.c.customer_id, s.c.activated_at, plans.c.currency, s.c.plan_id,
                     func.row_number().over(partition_by=s.c.customer_id,
                                            order_by=(s.c.activated_at, s.c.id)).label("rn"))
              .select_from(s.join(plans, plans.c.id == s.c.plan_id)).where(*where).subquery("ranked"))
    return select(ranked.c.customer_id, month_index(conn, ranked.c.activated_at).label("cohort_month"),
                  ranked.c.currency, ranked.c.plan_id).where(ranked.c.rn == 1)


def _active_runs(conn: Connection, only: Any = None) -> Any:
    """customer_id, first_month, last_month (NULL: open): the union of each customer's
    subscriptions' months, activation to end (those whose first payment came no later than
    their end), as runs of consecutive months."""
    s = subscriptions
    where = [s.c.activated_at.is_not(None), or_(s.c.ended_at.is_(None), s.c.activated_at <= s.c.ended_at)]
    if only is not None:
        where.append(s.c.customer_id.in_(only))
    spans = select(s.c.customer_id, month_index(conn, s.c.activated_at).label("a"),
                   func.coalesce(month_index(conn, s.c.ended_at), OPEN).label("e")).where(*where).subquery("spans")
    order = (spans.c.a, spans.c.e)
    w = select(spans.c.customer_id, spans.c.a, spans.c.e,
               func.max(spans.c.e).over(partition_by=spans.c.customer_id, order_by=order, rows=(None, -1))
               .label("prev_end")).subquery("w")
    starts_island = case((or_(w.c.prev_end.is_(None), w.c.a > w.c.prev_end + 1), 1), else_=0)
    g = select(w.c.customer_id, w.c.a, w.c.e,
               func.sum(starts_island).over(partition_by=w.c.customer_id, order_by=(w.c.a, w.c.e), rows=(None, 0))
               .label("island")).subquery("g")
    last = func.max(g.c.e)
    return (select(g.c.customer_id, func.min(g.c.a).label("first_month"),
                   case((last >= OPEN, None), else_=last).label("last_month"))
            .group_by(g.c.customer_id, g.c.island))


def _sum_cohort_cells(conn: Connection, *, sizes: set[int] | None, runs: set[int] | None,
                      days: set[datetime] | None, everything: bool = False) -> None:
    """(Re)compute the cohort cells: sizes of these cohort months, run starts / ends in these
    months, money paid on these days (``everything``: all of them)."""
    c, r, cc, inv = cohorts_table, active_runs_table, cohort_cells_table, invoices
    names = ["cohort_month", "currency", "plan_id", "kind", "month", "day", "value"]
    grp = [c.c.cohort_month, c.c.currency, c.c.plan_id]
    no_day = literal(None, UTCDateTime()).label("day")
    if everything:
        conn.execute(delete(cc))
    if everything or sizes:
        stmt = select(*grp, literal("size"), c.c.cohort_month, no_day, func.count())
        if not everything:
            conn.execute(delete(cc).where(cc.c.kind == "size", cc.c.cohort_month.in_(sorted(sizes or ()))))
            stmt = stmt.where(c.c.cohort_month.in_(sorted(sizes or ())))
        conn.execute(insert(cc).from_select(names, stmt.group_by(*grp)))
    if everything or runs:
        joined = r.join(c, c.c.customer_id == r.c.customer_id)
        starts = select(*grp, literal("starts"), r.c.first_month, no_day, func.count()).select_from(joined)
        ends = (select(*grp, literal("ends"), r.c.last_month, no_day, func.count()).select_from(joined)
                .where(r.c.last_month.is_not(None)))
        if not everything:
            ms = sorted(runs or ())
            conn.execute(delete(cc).where(cc.c.kind.in_(("starts", "ends")), cc.c.month.in_(ms)))
            starts, ends = starts.where(r.c.first_month.in_(ms)), ends.where(r.c.last_month.in_(ms))
        conn.execute(insert(cc).from_select(names, starts.group_by(*grp, r.c.first_month)))
        conn.execute(insert(cc).from_select(names, ends.group_by(*grp, r.c.last_month)))
    if everything or days:
        day = day_of(conn, inv.c.paid_at)
        month = month_index(conn, inv.c.paid_at)
        rev = (select(*grp, literal("revenue"), month, day, func.sum(inv.c.amount_paid_minor))
               .select_from(inv.join(c, and_(c.c.customer_id == inv.c.customer_id, c.c.currency == inv.c.currency)))
               .where(inv.c.status == "paid", inv.c.paid_at.is_not(None)))
        if everything:
            conn.execute(insert(cc).from_select(names, rev.group_by(*grp, month, day)))
        else:
            for chunk in _chunks(days or set()):
                conn.execute(delete(cc).where(cc.c.kind == "revenue", _in_days(cc.c.day, chunk)))
                conn.execute(insert(cc).from_select(names, rev.where(_in_days(inv.c.paid_at, chunk))
                                                    .group_by(*grp, month, day)))


def rebuild_cohorts(conn: Connection) -> None:
    conn.execute(delete(cohorts_table))
    conn.execute(insert(cohorts_table).from_select(["customer_id", "cohort_month", "currency", "plan_id"],
                                                   _cohort_rows(conn)))
    conn.execute(delete(active_runs_table))
    conn.execute(insert(active_runs_table).from_select(["customer_id", "first_month", "last_month"],
                                                       _active_runs(conn)))
    _sum_cohort_cells(conn, sizes=None, runs=None, days=None, everything=True)


def fold_cohorts(conn: Connection, sub_ids: Any, inv_ids: Any, cust_ids: Any) -> None:
    """Recompute the cohort and active runs of the customers named (directly, or through a
    subscription or an invoice), then the cells they touch: the cohort months and run months
    before and after, and the days of the invoices named -- and of every invoice of a customer
    whose cohort changed."""
    inv, s, c, r = invoices, subscriptions, cohorts_table, active_runs_table
    custs = union(select(inv.c.customer_id).where(inv.c.id.in_(inv_ids)),
                  select(s.c.customer_id).where(s.c.id.in_(sub_ids)), cust_ids).subquery("cohort_custs")
    only = select(custs.c.customer_id)
    cohort_cols = [c.c.customer_id, c.c.cohort_month, c.c.currency, c.c.plan_id]
    before = {row[0]: tuple(row) for row in conn.execute(select(*cohort_cols).where(c.c.customer_id.in_(only)))}
    run_months: set[int] = set()

    def touched() -> None:
        for a, b in conn.execute(select(r.c.first_month, r.c.last_month).where(r.c.customer_id.in_(only))):
            run_months.add(int(a))
            if b is not None:
                run_months.add(int(b))

    touched()
    conn.execute(delete(c).where(c.c.customer_id.in_(only)))
    conn.execute(insert(c).from_select(["customer_id", "cohort_month", "currency", "plan_id"],
                                       _cohort_rows(conn, only=only)))
    conn.execute(delete(r).where(r.c.customer_id.in_(only)))
    conn.execute(insert(r).from_select(["customer_id", "first_month", "last_month"], _active_runs(conn, only=only)))
    touched()
    after = {row[0]: tuple(row) for row in conn.execute(select(*cohort_cols).where(c.c.customer_id.in_(only)))}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    sizes = {int(v[1]) for v in before.values()} | {int(v[1]) for v in after.values()}
    if changed:  # every run month of a customer whose cohort changed moves to another cell
        for i in range(0, len(changed), 1000):
            for a, b in conn.execute(select(r.c.first_month, r.c.last_month)
                                     .where(r.c.customer_id.in_(changed[i:i + 1000]))):
                run_months.add(int(a))
                if b is not None:
                    run_months.add(int(b))
    days = {calendar_start(row[0], "day") for row in conn.execute(
        select(inv.c.paid_at).where(inv.c.id.in_(inv_ids), inv.c.status == "paid", inv.c.paid_at.is_not(None)))}
    for i in range(0, len(changed), 1000):
        days |= {calendar_start(row[0], "day") for row in conn.execute(
            select(inv.c.paid_at).where(inv.c.customer_id.in_(changed[i:i + 1000]), inv.c.status == "paid",
                                        inv.c.paid_at.is_not(None)))}
    _sum_cohort_cells(conn, sizes={m for m in sizes if m is not None}, runs=run_months, days=days)


def cohort_cells(q: ReportQuery, by_plan: bool) -> tuple[Any, Any, Any]:
    """For a month-aligned range: (sizes, retained, revenue) statements over the cohort cells.
    sizes: currency, plan_id, cohort_month, customers; retained: currency, plan_id,
    cohort_month, then one column per month of the range (runs covering it); revenue:
    currency, plan_id, cohort_month, month, money."""
    cc = cohort_cells_table
    j0, n = month_of(q.start), len(q.periods())
    plan = (cc.c.plan_id if by_plan else literal("")).label("plan_id")
    in_range = [cc.c.cohort_month >= j0, cc.c.cohort_month < j0 + n]
    if q.currency:
        in_range.append(cc.c.currency == q.currency)
    grp = [cc.c.currency, plan, cc.c.cohort_month]
    sizes = select(*grp, func.sum(cc.c.value)).where(cc.c.kind == "size", *in_range).group_by(*grp)
    cols = [func.sum(case((and_(cc.c.kind == "starts", cc.c.month <= j0 + j), cc.c.value), else_=0))
            - func.sum(case((and_(cc.c.kind == "ends", cc.c.month < j0 + j), cc.c.value), else_=0))
            for j in range(n)]
    retained = (select(*grp, *cols).where(cc.c.kind.in_(("starts", "ends")), cc.c.month < j0 + n, *in_range)
                .group_by(*grp))
    revenue = (select(*grp, cc.c.month, func.sum(cc.c.value))
               .where(cc.c.kind == "revenue", cc.c.month >= j0, cc.c.month < j0 + n, *in_range)
               .group_by(*grp, cc.c.month))
    return sizes, retained, revenue
