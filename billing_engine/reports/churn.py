"""Churn report: per period (and plan), subscribers at the start, new ones, voluntary and
involuntary cancellations (involuntary split by reason), rates, MRR lost to each kind,
and revenue recovered by dunning. Definitions: docs/reports.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing_engine.reports import rollups
from billing_engine.reports.model import Column, Report, group_columns, is_blank, period_columns, rate
from billing_engine.reports.params import ReportQuery
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
        for r in conn.execute(select(rs.c.currency, rs.c.plan_id, rs.c.b, func.count(),
                                     func.sum(rs.c.amount_paid_minor))
                              .group_by(rs.c.currency, rs.c.plan_id, rs.c.b)):
            key = group_key(r[0], codes.get(r[1], r[1]), q.by)
            cells = list(recovered[key])
            c0, a0 = cells[r[2]]
            cells[r[2]] = (c0 + int(r[3]), a0 + int(r[4] or 0))
            recovered[key] = cells

    cols = columns(q.by)
    rows: list[dict[str, Any]] = []
    for key in sorted_groups(tls, recovered):
        group_rows: list[dict[str, Any]] = []
        tl = tls.get(key)
        balances = tl.balances() if tl else [(0, 0, 0, 0)] * n
        for i, (start, end) in enumerate(periods):
            moves = tl.periods[i] if tl else None
            counts = moves.counts if moves else Counter()
            by_kind = moves.churn_by_kind if moves else Counter()
            mrr_by_kind = moves.churn_mrr_by_kind if moves else Counter()
            reasons = moves.involuntary_by_reason if moves else Counter()
            active_start, active_end = balances[i][0], balances[i][1]
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
                "churn_rate": rate(churned, active_start),
                "voluntary_rate": rate(by_kind["voluntary"], active_start),
                "involuntary_rate": rate(by_kind["involuntary"], active_start),
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
