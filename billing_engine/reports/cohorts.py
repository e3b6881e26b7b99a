"""Customer cohorts: customers grouped by the period of their first payment ever (any
currency, any plan), followed period by period: how many are still subscribers and how much
they paid. Rows: one per (cohort, periods since the first payment) and group -- the currency
and plan of the customer's first paid subscription. Definitions: docs/reports.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.engine import Engine

from billing_engine.reports import rollups
from billing_engine.reports.day_rollups import cohort_cells, month_aligned, month_of
from billing_engine.reports.model import Column, Report, group_columns, rate
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.sql import bucket, invoices, plan_codes, plans, subscriptions, ts, tune
from billing_engine.reports.subscribers import GroupKey, group_key, key_fields


def columns(by: str | None) -> tuple[Column, ...]:
    return (
        Column("cohort_start", "cohort_start", "time"),
        Column("cohort_end", "cohort_end", "time"),
        *group_columns(by),
        Column("periods_since", "periods_since", "count"),
        Column("customers", "customers", "count"),
        Column("retained_customers", "retained_customers", "count"),
        Column("lost_customers", "lost_customers", "count"),
        Column("customer_retention", "customer_retention", "rate"),
        Column("revenue_minor", "revenue", "money"),
        Column("revenue_retention", "revenue_retention", "rate"),
    )


def cohorts_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    sizes: Counter[tuple[GroupKey, int]] = Counter()
    retained: Counter[tuple[GroupKey, int, int]] = Counter()
    revenue: Counter[tuple[GroupKey, int, int]] = Counter()
    rollups.refresh(engine)  # the cohort rollups read below are brought up to date first
    with engine.connect() as conn:
        tune(conn)
        codes = plan_codes(conn)
        if month_aligned(q) and rollups.ready(conn):
            _from_cells(conn, q, codes, sizes, retained, revenue)
        else:
            _from_raw(conn, q, codes, sizes, retained, revenue)
    return Report("cohorts", "Cohorts", q, columns(q.by), _rows(q, sizes, retained, revenue), generated_at)


def _from_cells(conn: Any, q: ReportQuery, codes: dict[str, str], sizes: Counter[tuple[GroupKey, int]],
                retained: Counter[tuple[GroupKey, int, int]], revenue: Counter[tuple[GroupKey, int, int]]) -> None:
    """The same counts off the cohort rollups (a month-aligned range)."""
    j0, n = month_of(q.start), len(q.periods())
    size_q, retained_q, revenue_q = cohort_cells(q, q.by == "plan")
    for r in conn.execute(size_q):
        sizes[(group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]) - j0)] += int(r[3])
    for r in conn.execute(retained_q):
        key, i = group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]) - j0
        for j in range(i, n):
            retained[(key, i, j)] += int(r[3 + j] or 0)
    for r in conn.execute(revenue_q):
        revenue[(group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]) - j0, int(r[3]) - j0)] += int(r[4] or 0)


def _from_raw(conn: Any, q: ReportQuery, codes: dict[str, str], sizes: Counter[tuple[GroupKey, int]],
              retained: Counter[tuple[GroupKey, int, int]], revenue: Counter[tuple[GroupKey, int, int]]) -> None:
    periods = q.periods()
    n = len(periods)
    sub, inv = subscriptions, invoices
    by_plan = q.by == "plan"
    # each customer's first paid subscription (ties: the lower id): the cohort and its group
    ranked = (
        select(sub.c.customer_id, sub.c.activated_at, plans.c.currency,
               (sub.c.plan_id if by_plan else literal("")).label("plan_id"),
               func.row_number().over(partition_by=sub.c.customer_id,
                                      order_by=(sub.c.activated_at, sub.c.id)).label("rn"))
        .select_from(sub.join(plans, plans.c.id == sub.c.plan_id))
        .where(sub.c.activated_at.is_not(None), sub.c.activated_at < ts(q.end))
        .subquery("ranked")
    )
    cohort = (
        select(ranked.c.customer_id, ranked.c.currency, ranked.c.plan_id,
               bucket(ranked.c.activated_at, periods).label("i"))
        .where(ranked.c.rn == 1, ranked.c.activated_at >= ts(q.start))
    )
    if q.currency:  # a filter on the groups; the cohort itself is decided over every currency
        cohort = cohort.where(ranked.c.currency == q.currency)
    c = cohort.cte("cohort")
    for r in conn.execute(select(c.c.currency, c.c.plan_id, c.c.i, func.count())
                          .group_by(c.c.currency, c.c.plan_id, c.c.i)):
        sizes[(group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]))] += int(r[3])

    # retained: a subscriber at some time in the period (its subscriptions that count:
    # first payment no later than the end), from the period of activation to that of the end
    sa = bucket(sub.c.activated_at, periods)
    se = case((sub.c.ended_at.is_(None), literal(n - 1)), else_=bucket(sub.c.ended_at, periods))
    spans = (
        select(sub.c.customer_id, sa.label("sa"), se.label("se"))
        .where(sub.c.activated_at.is_not(None), sub.c.activated_at < ts(q.end),
               or_(sub.c.ended_at.is_(None), sub.c.activated_at <= sub.c.ended_at),
               sub.c.customer_id.in_(select(c.c.customer_id)))
        .subquery("spans")
    )
    nums = union_all(*[select(literal(j).label("j")) for j in range(n)]).subquery("nums")
    active = (
        select(c.c.currency, c.c.plan_id, c.c.i, nums.c.j, c.c.customer_id)
        .select_from(c.join(spans, spans.c.customer_id == c.c.customer_id)
                     .join(nums, and_(spans.c.sa <= nums.c.j, nums.c.j <= spans.c.se)))
        .distinct()
        .subquery("active")
    )
    for r in conn.execute(select(active.c.currency, active.c.plan_id, active.c.i, active.c.j, func.count())
                          .group_by(active.c.currency, active.c.plan_id, active.c.i, active.c.j)):
        retained[(group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]), int(r[3]))] += int(r[4])

    paid = (
        select(c.c.currency, c.c.plan_id, c.c.i, bucket(inv.c.paid_at, periods).label("j"),
               inv.c.amount_paid_minor)
        .select_from(inv.join(c, and_(c.c.customer_id == inv.c.customer_id, c.c.currency == inv.c.currency)))
        .where(inv.c.status == "paid", inv.c.paid_at >= ts(q.start), inv.c.paid_at < ts(q.end))
        .subquery("cohort_paid")
    )
    for r in conn.execute(select(paid.c.currency, paid.c.plan_id, paid.c.i, paid.c.j,
                                 func.sum(paid.c.amount_paid_minor))
                          .group_by(paid.c.currency, paid.c.plan_id, paid.c.i, paid.c.j)):
        revenue[(group_key(r[0], codes.get(r[1], r[1]), q.by), int(r[2]), int(r[3]))] += int(r[4] or 0)


def _rows(q: ReportQuery, sizes: Counter[tuple[GroupKey, int]], retained: Counter[tuple[GroupKey, int, int]],
          revenue: Counter[tuple[GroupKey, int, int]]) -> list[dict[str, Any]]:
    periods = q.periods()
    n = len(periods)
    groups: dict[GroupKey, set[int]] = defaultdict(set)
    for key, i in sizes:
        groups[key].add(i)
    rows: list[dict[str, Any]] = []
    for key in sorted(groups):
        for i in sorted(groups[key]):
            size = sizes[(key, i)]
            first_revenue = revenue[(key, i, i)]
            for j in range(i, n):
                kept = retained[(key, i, j)]
                rows.append({
                    "cohort_start": periods[i][0], "cohort_end": periods[i][1], **key_fields(key, q.by),
                    "periods_since": j - i, "customers": size, "retained_customers": kept,
                    "lost_customers": size - kept, "customer_retention": rate(kept, size),
                    "revenue_minor": revenue[(key, i, j)], "revenue_retention": rate(revenue[(key, i, j)], first_revenue),
                })
    return rows
