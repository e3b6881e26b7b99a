"""Revenue report: per period, currency (and plan) -- gross collected (paid invoices by
``paid_at``; after coupon discounts, which are shown beside it: gross + discounts = the
price in force), refunds (succeeded refunds by ``succeeded_at``), net, paying customers and
how many of them are new (first payment ever in this period) or returning.
Definitions: docs/reports.md.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Table, case, distinct, func, literal, select
from sqlalchemy.engine import Engine

from billing_engine.models import ReportCustomerFirstPaid
from billing_engine.reports import rollups
from billing_engine.reports.day_rollups import month_aligned, paid_days_table, paying_month_counts
from billing_engine.reports.model import Column, Report, group_columns, is_blank, period_columns
from billing_engine.reports.params import ReportQuery, day_aligned
from billing_engine.reports.sql import bucket, invoices, plan_codes, refunds, ts, tune
from billing_engine.reports.subscribers import GroupKey, group_key, key_fields, sorted_groups


def columns(by: str | None) -> tuple[Column, ...]:
    return period_columns() + group_columns(by) + (
        Column("invoices_paid", "invoices_paid", "count"),
        Column("gross_minor", "gross", "money"),
        Column("discounts_minor", "discounts", "money"),
        Column("refund_count", "refunds_count", "count"),
        Column("refunds_minor", "refunds", "money"),
        Column("guarantee_refunds_minor", "guarantee_refunds", "money"),
        Column("net_minor", "net", "money"),
        Column("paying_customers", "paying_customers", "count"),
        Column("new_customers", "new_customers", "count"),
        Column("returning_customers", "returning_customers", "count"),
    )


first_paid_rollup: Table = ReportCustomerFirstPaid.__table__  # type: ignore[attr-defined]
MASK_PERIODS = 62  # periods that fit in one BIGINT bit mask


def _customer_counts(conn: Any, q: ReportQuery, by_plan: bool) -> list[tuple[tuple[str, str], int, int, int]]:
    """Paying and new customers per (currency, plan, period) without COUNT(DISTINCT) over every
    invoice: one pass groups the paid invoices per (customer, currency, plan) into a bit mask of
    the periods paid in and the first payment; a second, small pass counts the bits.
    A customer is *new* in the period of their first payment ever (any currency)."""
    inv = invoices
    periods = q.periods()
    n = len(periods)
    if month_aligned(q) and rollups.ready(conn):
        out = []
        for r in conn.execute(paying_month_counts(q, by_plan)):
            for i in range(n):
                out.append(((r[0], r[1]), i, int(r[2 + 2 * i] or 0), int(r[3 + 2 * i] or 0)))
        return out
    if n > MASK_PERIODS:
        return _customer_counts_distinct(conn, q, by_plan)
    b = bucket(inv.c.paid_at, periods)
    bit = case((b >= 0, literal(1, BigInteger).op("<<")(b)), else_=literal(0, BigInteger))
    mask = func.bit_or(bit) if conn.dialect.name == "postgresql" else func.sum(distinct(bit))
    plan = (inv.c.plan_id if by_plan else literal("")).label("plan_id")
    per = (
        select(inv.c.customer_id, inv.c.currency, plan, mask.label("mask"))
        .where(inv.c.status == "paid", inv.c.paid_at >= ts(q.start), inv.c.paid_at < ts(q.end))
        .group_by(inv.c.customer_id, inv.c.currency, plan)
        .subquery("per_customer")
    )
    # each customer's first payment ever (any currency, any plan) from the rollup: only the
    # range's invoices are aggregated. --currency filters the groups afterwards: it never
    # redefines "new"
    first = first_paid_rollup
    f = (select(per, first.c.first_paid_at.label("first_ever"))
         .select_from(per.join(first, first.c.customer_id == per.c.customer_id)).subquery("with_first"))
    fb = bucket(f.c.first_ever, periods)
    cols: list[Any] = []
    for i in range(n):
        has = f.c.mask.op(">>")(i).op("&")(1)
        cols.append(func.sum(has))
        cols.append(func.sum(case((fb == i, has), else_=0)))
    stmt = select(f.c.currency, f.c.plan_id, *cols).where(f.c.mask != 0)
    if q.currency:
        stmt = stmt.where(f.c.currency == q.currency)
    out = []
    for r in conn.execute(stmt.group_by(f.c.currency, f.c.plan_id)):
        for i in range(n):
            out.append(((r[0], r[1]), i, int(r[2 + 2 * i] or 0), int(r[3 + 2 * i] or 0)))
    return out


def _customer_counts_distinct(conn: Any, q: ReportQuery, by_plan: bool) -> list[tuple[tuple[str, str], int, int, int]]:
    """The same counts for ranges with more periods than a bit mask holds (COUNT(DISTINCT))."""
    inv = invoices
    periods = q.periods()
    plan = (inv.c.plan_id if by_plan else literal("")).label("plan_id")
    first = first_paid_rollup
    b = bucket(inv.c.paid_at, periods)
    rows = (
        select(inv.c.currency, plan, b.label("b"), inv.c.customer_id,
               case((bucket(first.c.first_paid_at, periods) == b, inv.c.customer_id)).label("new_customer"))
        .select_from(inv.join(first, first.c.customer_id == inv.c.customer_id))
        .where(inv.c.status == "paid", inv.c.paid_at >= ts(q.start), inv.c.paid_at < ts(q.end))
    )
    if q.currency:
        rows = rows.where(inv.c.currency == q.currency)
    s = rows.subquery("paid")
    stmt = select(s.c.currency, s.c.plan_id, s.c.b, func.count(distinct(s.c.customer_id)),
                  func.count(distinct(s.c.new_customer))).group_by(s.c.currency, s.c.plan_id, s.c.b)
    return [((r[0], r[1]), int(r[2]), int(r[3]), int(r[4])) for r in conn.execute(stmt)]


def paid_day_totals(q: ReportQuery, by_plan: bool, recovered: bool = False) -> Any:
    """Paid invoices per (currency, plan, period) off ``report_paid_days`` (a day-aligned range):
    count, amount paid, discounts -- or, with ``recovered``, those paid after a failed attempt."""
    d = paid_days_table
    plan = (d.c.plan_id if by_plan else literal("")).label("plan_id")
    b = bucket(d.c.day, q.periods()).label("b")
    sums = ([func.sum(d.c.recovered_invoices), func.sum(d.c.recovered_minor)] if recovered else
            [func.sum(d.c.invoices_paid), func.sum(d.c.gross_minor), func.sum(d.c.discounts_minor)])
    stmt = select(d.c.currency, plan, b, *sums).where(d.c.day >= ts(q.start), d.c.day < ts(q.end))
    if q.currency:
        stmt = stmt.where(d.c.currency == q.currency)
    stmt = stmt.group_by(d.c.currency, plan, b)
    return stmt.having(func.sum(d.c.recovered_invoices) > 0) if recovered else stmt


def revenue_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    periods = q.periods()
    n = len(periods)
    inv, ref = invoices, refunds
    by_plan = q.by == "plan"
    blank = {"invoices_paid": 0, "gross_minor": 0, "discounts_minor": 0, "refund_count": 0, "refunds_minor": 0,
             "guarantee_refunds_minor": 0,
             "paying_customers": 0, "new_customers": 0}
    data: dict[GroupKey, list[dict[str, int]]] = defaultdict(lambda: [dict(blank) for _ in range(n)])
    rollups.refresh(engine)  # report_customer_first_paid, read below
    with engine.connect() as conn:
        tune(conn)
        codes = plan_codes(conn)
        if day_aligned(q) and rollups.ready(conn):
            stmt = paid_day_totals(q, by_plan)
        else:
            b = bucket(inv.c.paid_at, periods)
            paid = (
                select(
                    inv.c.currency,
                    (inv.c.plan_id if by_plan else literal("")).label("plan_id"),
                    b.label("b"),
                    inv.c.customer_id,
                    inv.c.amount_paid_minor,
                    inv.c.discount_minor,
                )
                .where(inv.c.status == "paid", inv.c.paid_at >= ts(q.start), inv.c.paid_at < ts(q.end))
            )
            if q.currency:
                paid = paid.where(inv.c.currency == q.currency)
            s = paid.subquery("paid")
            stmt = select(s.c.currency, s.c.plan_id, s.c.b, func.count(), func.sum(s.c.amount_paid_minor),
                          func.sum(s.c.discount_minor)).group_by(s.c.currency, s.c.plan_id, s.c.b)
        for r in conn.execute(stmt):
            cell = data[group_key(r[0], codes.get(r[1], r[1]), q.by)][r[2]]
            cell["invoices_paid"] += int(r[3])
            cell["gross_minor"] += int(r[4] or 0)
            cell["discounts_minor"] += int(r[5] or 0)
        for (cur, plan_id), i, paying, new in _customer_counts(conn, q, by_plan):
            cell = data[group_key(cur, codes.get(plan_id, plan_id), q.by)][i]
            cell["paying_customers"] += paying
            cell["new_customers"] += new

        rq = (
            select(
                ref.c.currency,
                (inv.c.plan_id if by_plan else literal("")).label("plan_id"),
                bucket(ref.c.succeeded_at, periods).label("b"),
                ref.c.amount_minor,
                case((ref.c.guarantee, ref.c.amount_minor), else_=0).label("guarantee_minor"),
            )
            .select_from(ref.join(inv, inv.c.id == ref.c.invoice_id))
            .where(ref.c.status == "succeeded", ref.c.succeeded_at >= ts(q.start), ref.c.succeeded_at < ts(q.end))
        )
        if q.currency:
            rq = rq.where(ref.c.currency == q.currency)
        rs = rq.subquery("refunded")
        for r in conn.execute(select(rs.c.currency, rs.c.plan_id, rs.c.b, func.count(), func.sum(rs.c.amount_minor),
                                     func.sum(rs.c.guarantee_minor))
                              .group_by(rs.c.currency, rs.c.plan_id, rs.c.b)):
            cell = data[group_key(r[0], codes.get(r[1], r[1]), q.by)][r[2]]
            cell["refund_count"] += int(r[3])
            cell["refunds_minor"] += int(r[4] or 0)
            cell["guarantee_refunds_minor"] += int(r[5] or 0)

    cols = columns(q.by)
    rows: list[dict[str, Any]] = []
    for key in sorted_groups(data):
        group_rows = []
        for (start, end), cell in zip(periods, data[key], strict=True):
            row: dict[str, Any] = {"period_start": start, "period_end": end, **key_fields(key, q.by)}
            row.update({
                "invoices_paid": cell["invoices_paid"],
                "gross_minor": cell["gross_minor"],
                "discounts_minor": cell["discounts_minor"],
                "refund_count": cell["refund_count"],
                "refunds_minor": cell["refunds_minor"],
                "guarantee_refunds_minor": cell["guarantee_refunds_minor"],
                "net_minor": cell["gross_minor"] - cell["refunds_minor"],
                "paying_customers": cell["paying_customers"],
                "new_customers": cell["new_customers"],
                "returning_customers": cell["paying_customers"] - cell["new_customers"],
            })
            group_rows.append(row)
        if not is_blank(group_rows, cols):
            rows.extend(group_rows)
    return Report("revenue", "Revenue", q, cols, rows, generated_at)
