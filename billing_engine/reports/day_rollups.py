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

from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    union,
)
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
from billing_engine.reports.fold import PREFIX, Scratch, Sync, add, apply_deltas
from billing_engine.reports.params import ReportQuery, calendar_start
from billing_engine.reports.sql import invoices, plans, subscriber_events, subscriptions, ts

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


def day_value(conn: Connection, column: Any) -> Any:
    """:func:`day_of` read back into Python (a UTC datetime on either dialect)."""
    return type_coerce(day_of(conn, column), UTCDateTime())


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


SUB_EVENT_COLS = ["subscription_id", "seq", "day", *EVENT_COLUMNS]


def _sub_event_rows(conn: Connection, only: Any = None) -> Any:
    """The rows of ``report_sub_events`` (columns :data:`SUB_EVENT_COLS`) of every subscription
    (or of ``only``), set-based."""
    ev = subscriber_events(ALL_TIME, plan_mrr(conn), only=only)
    moves = ev.c.kind.in_(("churn", "change"))
    same = sum((case((and_(moves, calendar_key(conn, ev.c.at, g) == calendar_key(conn, ev.c.activated_at, g)),
                      1 << i), else_=0) for i, g in enumerate(GRAINS)), literal(0))
    seq = func.row_number().over(partition_by=ev.c.subscription_id, order_by=(ev.c.at, ev.c.kind))
    return select(ev.c.subscription_id, seq, day_of(conn, ev.c.at), *[ev.c[c] for c in EVENT_COLUMNS[:-1]], same)


def _insert_sub_events(conn: Connection, only: Any = None) -> None:
    conn.execute(insert(sub_events_table).from_select(SUB_EVENT_COLS, _sub_event_rows(conn, only)))


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


def fold_sub_events(s: Scratch, subs: Table) -> None:
    """Recompute the events of these subscriptions (every subscription of each customer named:
    whether an activation is new or a reactivation depends on the customer's other
    subscriptions), write the rows that differ and count again the days they name."""
    e = sub_events_table
    only = select(subs.c.id)
    sync = Sync(s, e, "sub_events", SUB_EVENT_COLS, ["subscription_id", "seq"], e.c.subscription_id.in_(only),
                _sub_event_rows(s.conn, only=only), keys=s.count[subs.name[len(PREFIX):]])
    days = {calendar_start(d, "day") for d in sync.values("day")}
    sync.apply()
    if days:
        _sum_sub_event_days(s.conn, days)


# --------------------------------------------------------------------------- paid invoices

def _sum_paid_days(conn: Connection, days: set[datetime] | None = None, src: Table = invoices) -> None:
    """(Re)sum ``report_paid_days`` for these days (None: every day) from ``src``: the invoices,
    or a scratch copy of the paid invoices of those days (:func:`paid_rows`)."""
    inv, p = src, paid_days_table
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


PAID_ROW_COLS = ["customer_id", "currency", "plan_id", "status", "paid_at", "amount_paid_minor", "discount_minor",
                 "attempt_count"]


def paid_days_of(conn: Connection, invs: Table) -> set[datetime]:
    """The days on which the invoices in ``invs`` were paid. (A paid invoice keeps its
    ``paid_at`` and stays paid -- refunds are their own rows -- so these are the only days of
    ``report_paid_days`` that can change.)"""
    inv = invoices
    return {calendar_start(r[0], "day") for r in conn.execute(
        select(day_value(conn, inv.c.paid_at)).where(inv.c.id.in_(select(invs.c.id)), inv.c.status == "paid",
                                                     inv.c.paid_at.is_not(None)).distinct())}


def paid_rows(s: Scratch, days: set[datetime]) -> Table:
    """A scratch copy of the paid invoices of these days (one pass over the index on
    ``paid_at``): what the paid-day and the cohort-money sums of those days read."""
    inv = invoices
    t = s.like("paid_rows", inv, PAID_ROW_COLS)
    for chunk in _chunks(days):
        s.conn.execute(insert(t).from_select(PAID_ROW_COLS, select(*[inv.c[c] for c in PAID_ROW_COLS]).where(
            inv.c.status == "paid", _in_days(inv.c.paid_at, chunk))))
    s.analyze(t)
    return t


# --------------------------------------------------------------------------- failed invoices

def _sum_failed_days(conn: Connection, failed: Table, days: set[datetime] | None = None) -> None:
    f, d = failed, failed_days_table
    keys = [day_of(conn, f.c.first_failed_at).label("day"), f.c.currency, f.c.plan_id, f.c.decline_code,
            f.c.decline_kind, f.c.status, f.c.method,
            case((f.c.status == "paid", day_of(conn, f.c.paid_at))).label("paid_day"),
            case((f.c.status != "paid", day_of(conn, f.c.closed_at))).label("closed_day"),
            f.c.cancellation_kind, f.c.reason_group]  # the subscription's, kept on the row
    stmt = select(*keys, func.count(), func.sum(f.c.amount_minor), func.sum(f.c.paid_minor),
                  func.coalesce(func.sum(f.c.seconds), 0))
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


def fold_failed(s: Scratch, failed: Table, scope: Table, rows: Any) -> None:
    """``report_failed_invoices`` for the invoices in ``scope`` made equal to ``rows`` (their
    recomputation), then the days of first failure of the rows that differ summed again."""
    f = failed
    sync = Sync(s, f, "failed", [c.name for c in f.c], ["invoice_id"], f.c.invoice_id.in_(select(scope.c.id)), rows,
                keys=s.count[scope.name[len(PREFIX):]])
    days = {calendar_start(d, "day") for d in sync.values("first_failed_at")}
    sync.apply()
    if days:
        _sum_failed_days(s.conn, f, days)


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


RUN_PK = ["customer_id", "currency", "plan_id", "first_month"]


def _merge(runs: list[list[int]], m: int) -> None:
    """Add month ``m`` to sorted, disjoint, non-adjacent runs ``[first, last]`` (in place)."""
    for r in runs:
        if r[0] <= m <= r[1]:
            return
    runs.append([m, m])
    runs.sort()
    out: list[list[int]] = []
    for r in runs:
        if out and r[0] <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], r[1])
        else:
            out.append(list(r))
    runs[:] = out


def paying_run_changes(conn: Connection, invs: Table, custs: Table) -> tuple[list[Any], list[Any]]:
    """The paying runs gone and come when the paid invoices among ``invs`` are counted: each
    paid month extends, bridges or starts a run of its customer (per currency and plan, and
    per currency), and ``is_new`` follows the customer's first paid month. Exact because the
    set of paid invoices only grows (``paid`` is final, ``paid_at`` never changes) and every
    invoice that becomes paid is named by an event: counting one again changes nothing.
    ``custs``: the customers of those paid invoices."""
    inv, r = invoices, paying_runs_table
    mi = month_index(conn, inv.c.paid_at)
    paid = list(conn.execute(select(inv.c.customer_id, inv.c.currency, inv.c.plan_id, mi)
                             .where(inv.c.id.in_(select(invs.c.id)), inv.c.status == "paid", inv.c.paid_at.is_not(None))
                             .distinct()))
    if not paid:
        return [], []
    old: dict[str, list[tuple[Any, ...]]] = {}
    for row in conn.execute(select(*[r.c[c] for c in RUN_COLUMNS]).where(r.c.customer_id.in_(select(custs.c.id)))):
        old.setdefault(row[0], []).append(tuple(row))
    adds: dict[str, list[tuple[str, str, int]]] = {}
    for cust, cur, plan, m in paid:
        adds.setdefault(cust, []).append((cur, plan, int(m)))
    gone: list[Any] = []
    came: list[Any] = []
    for cust, months in adds.items():
        before = old.get(cust, [])
        runs: dict[tuple[str, str], list[list[int]]] = {}
        for _c, cur, plan, first, last, _n in before:
            runs.setdefault((cur, plan), []).append([int(first), int(last)])
        for cur, plan, m in months:
            for key in ((cur, plan), (cur, "")):
                _merge(runs.setdefault(key, []), m)
        first_ever = min(rr[0] for lst in runs.values() for rr in lst)
        after = {(cust, cur, plan, a, b, int(a == first_ever)) for (cur, plan), lst in runs.items() for a, b in lst}
        prev = {(c, cur, plan, int(a), int(b), int(n)) for c, cur, plan, a, b, n in before}
        gone += sorted(prev - after)
        came += sorted(after - prev)
    return gone, came


def fold_paying(s: Scratch, invs: Table, custs: Table) -> None:
    """Count the paid invoices among ``invs`` in their customers' paying runs
    (:func:`paying_run_changes`), write the runs that differ and move the per-month counts by
    them (a run gone: -1 start / end in its months, a run come: +1)."""
    r, conn = paying_runs_table, s.conn
    sync = Sync(s, r, "paying_runs", RUN_COLUMNS, RUN_PK, None, None, rows=paying_run_changes(conn, invs, custs))
    deltas: dict[tuple[Any, ...], list[int]] = {}
    for rows, sign in zip(sync.rows(), (-1, 1), strict=True):
        for _cust, cur, plan, first, last, is_new in rows:
            d = deltas.setdefault((int(first), cur, plan), [0, 0, 0])
            d[0] += sign
            d[2] += sign * int(is_new)
            deltas.setdefault((int(last), cur, plan), [0, 0, 0])[1] += sign
    sync.apply()
    apply_deltas(conn, paying_months_table, ["month", "currency", "plan_id"], ["starts", "ends", "new"], deltas)


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
                      days: set[datetime] | None, everything: bool = False, src: Table = invoices) -> None:
    """(Re)compute the cohort cells: sizes of these cohort months, run starts / ends in these
    months, money paid on these days (``everything``: all of them; ``src``: where the paid
    invoices are read, as :func:`_sum_paid_days`)."""
    c, r, cc, inv = cohorts_table, active_runs_table, cohort_cells_table, src
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
            probe = src is not invoices and conn.dialect.name == "postgresql"
            if probe:  # a day's payments meet their customers' cohorts by key, not by hashing every cohort
                conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
            for chunk in _chunks(days or set()):
                conn.execute(delete(cc).where(cc.c.kind == "revenue", _in_days(cc.c.day, chunk)))
                conn.execute(insert(cc).from_select(names, rev.where(_in_days(inv.c.paid_at, chunk))
                                                    .group_by(*grp, month, day)))
            if probe:
                conn.exec_driver_sql("SET LOCAL enable_hashjoin = on")


def rebuild_cohorts(conn: Connection) -> None:
    conn.execute(delete(cohorts_table))
    conn.execute(insert(cohorts_table).from_select(["customer_id", "cohort_month", "currency", "plan_id"],
                                                   _cohort_rows(conn)))
    conn.execute(delete(active_runs_table))
    conn.execute(insert(active_runs_table).from_select(["customer_id", "first_month", "last_month"],
                                                       _active_runs(conn)))
    _sum_cohort_cells(conn, sizes=None, runs=None, days=None, everything=True)


COHORT_COLS = ["customer_id", "cohort_month", "currency", "plan_id"]
ACTIVE_COLS = ["customer_id", "first_month", "last_month"]


def _run_cells(conn: Connection, custs: Table) -> list[Any]:
    """(cohort_month, currency, plan_id, kind, month, n): these customers' active runs
    starting / ending per month, in their cohort's cell (as :func:`_sum_cohort_cells`)."""
    c, r = cohorts_table, active_runs_table
    joined = r.join(c, c.c.customer_id == r.c.customer_id)
    grp = [c.c.cohort_month, c.c.currency, c.c.plan_id]
    mine = r.c.customer_id.in_(select(custs.c.id))
    out = list(conn.execute(select(*grp, literal("starts"), r.c.first_month, func.count()).select_from(joined)
                            .where(mine).group_by(*grp, r.c.first_month)))
    out += conn.execute(select(*grp, literal("ends"), r.c.last_month, func.count()).select_from(joined)
                        .where(mine, r.c.last_month.is_not(None)).group_by(*grp, r.c.last_month))
    return out


def fold_cohorts(s: Scratch, custs: Table) -> set[datetime]:
    """Recompute these customers' cohort and active runs, write the rows that differ, and move
    the cohort cells by them: sizes by the cohorts gone / come, run starts / ends by the
    cells of the customers whose cohort or runs changed (before minus after). Returns the days
    of every payment of a customer whose cohort changed: their money moves to another cell
    (summed again by :func:`fold_days`, with the days of the invoices named)."""
    conn = s.conn
    inv, c, r = invoices, cohorts_table, active_runs_table
    only = select(custs.c.id)
    n = s.count[custs.name[len(PREFIX):]]
    cs = Sync(s, c, "cohorts", COHORT_COLS, ["customer_id"], c.c.customer_id.in_(only), _cohort_rows(conn, only=only),
              keys=n)
    rs = Sync(s, r, "active_runs", ACTIVE_COLS, ["customer_id", "first_month"], r.c.customer_id.in_(only),
              _active_runs(conn, only=only), keys=n)
    deltas: dict[tuple[Any, ...], list[int]] = {}
    for rows, sign in zip(cs.rows(), (-1, 1), strict=True):
        for _cust, month, cur, plan in rows:
            deltas.setdefault((int(month), cur, plan, "size", int(month)), [0])[0] += sign
    moved = changed = None
    if cs.changed() or rs.changed():
        ids = {r[0] for rows in (*cs.rows(), *rs.rows()) for r in rows}
        moved = s.key_list("cohort_moved", ids)
        add(deltas, _run_cells(conn, moved), -1, 1, 0)
        cohort_ids = sorted({r[0] for rows in cs.rows() for r in rows})
        changed = cohort_ids or None
    cs.apply()
    rs.apply()
    if moved is not None:
        add(deltas, _run_cells(conn, moved), 1, 1, 0)
    apply_deltas(conn, cohort_cells_table, ["cohort_month", "currency", "plan_id", "kind", "month"], ["value"], deltas,
                 extra={"day": None})
    days: set[datetime] = set()
    if changed:  # every payment of a customer whose cohort changed moves to another cell
        for i in range(0, len(changed), 1000):
            days |= {calendar_start(row[0], "day") for row in conn.execute(
                select(day_value(conn, inv.c.paid_at)).where(inv.c.customer_id.in_(changed[i:i + 1000]),
                                                             inv.c.status == "paid", inv.c.paid_at.is_not(None))
                .distinct())}
    return days


def fold_days(s: Scratch, paid_days: set[datetime], cohort_days: set[datetime]) -> None:
    """Sum again the paid days of the invoices named and the cohorts' money of those days and
    of ``cohort_days``, from one scratch copy of those days' paid invoices."""
    if not paid_days and not cohort_days:
        return
    src = paid_rows(s, paid_days | cohort_days)
    if paid_days:
        _sum_paid_days(s.conn, paid_days, src)
    _sum_cohort_cells(s.conn, sizes=None, runs=None, days=paid_days | cohort_days, src=src)


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
