"""Churn report: per period (and plan), subscribers at the start, new ones, voluntary and
involuntary cancellations (involuntary split by reason), rates, MRR lost to each kind,
and revenue recovered by dunning. Definitions: docs/reports.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Engine

from billing_engine.models import Subscription, SubscriptionPause
from billing_engine.reports import rollups
from billing_engine.reports.model import Column, Report, group_columns, is_blank, period_columns, rate
from billing_engine.reports.params import ReportQuery, day_aligned
from billing_engine.reports.revenue import paid_day_totals
from billing_engine.reports.sql import bucket, invoices, plan_codes, ts, tune
from billing_engine.reports.subscribers import GroupKey, group_key, key_fields, sorted_groups, timelines

REASON_COLUMNS = ("payment_failed", "hard_decline", "dispute", "card_expired", "other")


def columns(by: str | None) -> tuple[Column, ...]:
    return period_columns() + group_columns(by) + (
        Column("active_start", "active_start", "count"),
        Column("new", "new", "count"),
        Column("churned", "churned", "count"),
        Column("voluntary", "voluntary", "count"),
        Column("involuntary", "involuntary", "count"),
        *(Column(f"involuntary_{r}", f"involuntary_{r}", "count") for r in REASON_COLUMNS),
        Column("active_end", "active_end", "count"),
        Column("paused_start", "paused_start", "count"),
        Column("paused_end", "paused_end", "count"),
        Column("churn_rate", "churn_rate", "rate"),
        Column("voluntary_rate", "voluntary_rate", "rate"),
        Column("involuntary_rate", "involuntary_rate", "rate"),
        Column("mrr_lost_voluntary_minor", "mrr_lost_voluntary", "money"),
        Column("mrr_lost_involuntary_minor", "mrr_lost_involuntary", "money"),
        Column("recovered_invoices", "recovered_invoices", "count"),
        Column("recovered_minor", "recovered", "money"),
        Column("ended_unpaid", "ended_unpaid", "count"),
    )


def churn_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    periods = q.periods()
    n = len(periods)
    recovered: dict[GroupKey, list[tuple[int, int]]] = defaultdict(lambda: [(0, 0)] * n)
    rollups.refresh(engine)  # the rollups read below are brought up to date first
    with engine.connect() as conn:
        tune(conn)
        tls = timelines(conn, q)
        codes = plan_codes(conn)

        # invoices paid after at least one failed attempt, by paid_at (money: the invoice's plan)
        inv = invoices
        rin = select(inv.c.currency, inv.c.plan_id, bucket(inv.c.paid_at, periods).label("b"),
                     inv.c.amount_paid_minor).where(
            inv.c.status == "paid", inv.c.attempt_count > 1,
            inv.c.paid_at >= ts(q.start), inv.c.paid_at < ts(q.end))
        if q.currency:
            rin = rin.where(inv.c.currency == q.currency)
        rs = rin.subquery()
        stmt = (paid_day_totals(q, True, recovered=True) if day_aligned(q) and rollups.ready(conn) else
                select(rs.c.currency, rs.c.plan_id, rs.c.b, func.count(), func.sum(rs.c.amount_paid_minor))
                .group_by(rs.c.currency, rs.c.plan_id, rs.c.b))
        for r in conn.execute(stmt):
            key = group_key(r[0], codes.get(r[1], r[1]), q.by)
            cells = list(recovered[key])
            c0, a0 = cells[r[2]]
            cells[r[2]] = (c0 + int(r[3]), a0 + int(r[4] or 0))
            recovered[key] = cells
        paused = _paused_counts(conn, q, codes)

    cols = columns(q.by)
    rows: list[dict[str, Any]] = []
    for key in sorted_groups(tls, recovered, paused):
        group_rows: list[dict[str, Any]] = []
        tl = tls.get(key)
        balances = tl.balances() if tl else [(0, 0, 0, 0)] * n
        for i, (start, end) in enumerate(periods):
            moves = tl.periods[i] if tl else None
            counts = moves.counts if moves else Counter()
            by_kind = moves.churn_by_kind if moves else Counter()
            mrr_by_kind = moves.churn_mrr_by_kind if moves else Counter()
            reasons = moves.involuntary_by_reason if moves else Counter()
            subs_start = balances[i][0]
            p0, p1 = paused[key][i], paused[key][i + 1]
            active_start, active_end = subs_start - p0, balances[i][1] - p1  # paused: counted apart
            churned = counts["churn"]
            rec_n, rec_amount = recovered[key][i] if key in recovered else (0, 0)
            row: dict[str, Any] = {"period_start": start, "period_end": end, **key_fields(key, q.by)}
            row.update({
                "active_start": active_start,
                "new": counts["new"] + counts["reactivation"],
                "churned": churned,
                "voluntary": by_kind["voluntary"],
                "involuntary": by_kind["involuntary"],
                **{f"involuntary_{r}": reasons[r] for r in REASON_COLUMNS},
                "active_end": active_end,
                "paused_start": p0,
                "paused_end": p1,
                # rates over every subscriber at the start, paused ones included (they can churn)
                "churn_rate": rate(churned, subs_start),
                "voluntary_rate": rate(by_kind["voluntary"], subs_start),
                "involuntary_rate": rate(by_kind["involuntary"], subs_start),
                "mrr_lost_voluntary_minor": mrr_by_kind["voluntary"],
                "mrr_lost_involuntary_minor": mrr_by_kind["involuntary"],
                "recovered_invoices": rec_n,
                "recovered_minor": rec_amount,
                "ended_unpaid": counts["ended_unpaid"],
            })
            group_rows.append(row)
        if not is_blank(group_rows, cols):
            rows.extend(group_rows)
    return Report("churn", "Churn", q, cols, rows, generated_at)


def _paused_counts(conn: Any, q: ReportQuery, codes: dict[str, str]) -> dict[GroupKey, list[int]]:
    """Subscribers paused at each period boundary (n + 1 instants), per group: a pause row
    open at the instant, of a subscription that had paid (a subscriber) and not ended. One
    GROUP BY over the pauses, whatever the number of subscriptions."""
    from billing_engine.reports.sql import plans

    p = SubscriptionPause.__table__  # type: ignore[attr-defined]
    s = Subscription.__table__  # type: ignore[attr-defined]
    periods = q.periods()
    instants = [start for start, _ in periods] + [periods[-1][1]] if periods else []
    cols = [func.sum(case((and_(p.c.paused_at <= ts(t), or_(p.c.resumed_at.is_(None), p.c.resumed_at > ts(t)),
                                s.c.activated_at < ts(t), or_(s.c.ended_at.is_(None), s.c.ended_at >= ts(t))), 1),
                          else_=0)) for t in instants]
    out: dict[GroupKey, list[int]] = defaultdict(lambda: [0] * (len(instants) or 1))
    if not instants:
        return out
    stmt = (select(plans.c.currency, s.c.plan_id, *cols)
            .select_from(p.join(s, s.c.id == p.c.subscription_id).join(plans, plans.c.id == s.c.plan_id))
            .where(p.c.paused_at < ts(q.end))
            .group_by(plans.c.currency, s.c.plan_id))
    if q.currency:
        stmt = stmt.where(plans.c.currency == q.currency)
    for r in conn.execute(stmt):
        key = group_key(r[0], codes.get(r[1], r[1]), q.by)
        cells = out[key]
        for i in range(len(instants)):
            cells[i] += int(r[2 + i] or 0)
    return out
