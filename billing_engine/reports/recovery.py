"""Recovery attribution and the involuntary churn funnel, both over the failed invoices of
:mod:`billing_engine.reports.dunning_facts`, by the period of their first failure (a cohort:
"of what failed in March, how much came back, and how?"), outcomes as of the range end.

- ``recovery``: failed vs recovered money, the recovery rate (recovered / failed amount) and
  per recovery method -- automatic retry, the customer updated the card, the card updater,
  an admin -- the invoices, the money and the average days from first failure to payment.
- ``funnel``: per decline code of the first failure, failed -> recovered / still in dunning /
  lost, the lost ones split by why the subscription ended.

Definitions: docs/reports.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.engine import Engine

from billing_engine.reports import rollups
from billing_engine.reports.day_rollups import failed_days_table
from billing_engine.reports.dunning_facts import METHODS, failed_invoices
from billing_engine.reports.model import Column, Report, group_columns, is_blank, period_columns, rate
from billing_engine.reports.params import ReportQuery, day_aligned
from billing_engine.reports.sql import bucket, plan_codes, ts, tune
from billing_engine.reports.subscribers import GroupKey, group_key, key_fields, sorted_groups

DAY = Decimal(86400)
LOST_REASONS = ("payment_failed", "hard_decline", "card_expired", "dispute", "other")
NO_CODE = "(none)"


def days(seconds: int, n: int) -> Decimal | None:
    """Average days, 2 places half-even (None when nothing to average)."""
    if n == 0:
        return None
    return (Decimal(seconds) / n / DAY).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def recovery_columns(by: str | None) -> tuple[Column, ...]:
    per_method: list[Column] = []
    for m in METHODS:
        per_method += [Column(f"{m}_invoices", f"{m}_invoices", "count"),
                       Column(f"{m}_minor", m, "money"),
                       Column(f"{m}_days", f"{m}_days", "decimal")]
    return period_columns() + group_columns(by) + (
        Column("failed_invoices", "failed_invoices", "count"),
        Column("failed_minor", "failed", "money"),
        Column("recovered_invoices", "recovered_invoices", "count"),
        Column("recovered_minor", "recovered", "money"),
        Column("recovery_rate", "recovery_rate", "rate"),
        Column("invoice_recovery_rate", "invoice_recovery_rate", "rate"),
        Column("days_to_recovery", "days_to_recovery", "decimal"),
        *per_method,
        Column("in_dunning_invoices", "in_dunning_invoices", "count"),
        Column("lost_invoices", "lost_invoices", "count"),
    )


def funnel_columns(by: str | None) -> tuple[Column, ...]:
    return period_columns() + group_columns(by) + (
        Column("decline_kind", "decline_kind", "text"),
        Column("decline_code", "decline_code", "text"),
        Column("failed_invoices", "failed_invoices", "count"),
        Column("failed_minor", "failed", "money"),
        Column("recovered_invoices", "recovered_invoices", "count"),
        Column("recovered_minor", "recovered", "money"),
        Column("in_dunning_invoices", "in_dunning_invoices", "count"),
        Column("in_dunning_minor", "in_dunning", "money"),
        Column("lost_invoices", "lost_invoices", "count"),
        Column("lost_minor", "lost", "money"),
        *(Column(f"lost_{r}", f"lost_{r}", "count") for r in LOST_REASONS),
        Column("lost_voluntary", "lost_voluntary", "count"),
        Column("recovery_rate", "recovery_rate", "rate"),
    )


def failed_days(q: ReportQuery) -> Any:
    """:func:`dunning_facts.failed_invoices` summed per day off ``report_failed_days`` (a
    day-aligned range: "paid / closed before the range end" is exact per day at a midnight end)."""
    d = failed_days_table
    recovered = and_(d.c.status == "paid", d.c.paid_day < ts(q.end))
    outcome = case((recovered, "recovered"),
                   (and_(d.c.status.in_(("uncollectible", "void")), d.c.closed_day < ts(q.end)), "lost"),
                   else_="in_dunning")
    return (
        select(d.c.day, d.c.currency, d.c.plan_id, d.c.decline_code, d.c.decline_kind, outcome.label("outcome"),
               case((recovered, d.c.method)).label("method"), d.c.cancellation_kind, d.c.reason_group, d.c.n,
               d.c.amount_minor, case((recovered, d.c.paid_minor), else_=0).label("paid_minor"),
               case((recovered, d.c.seconds), else_=0).label("seconds"))
        .where(d.c.day >= ts(q.start), d.c.day < ts(q.end))
        .subquery("failed_days")
    )


def _totals(engine: Engine, q: ReportQuery, extra: Callable[[Any], list[Any]]) -> tuple[list[Any], dict[str, str]]:
    """The failed invoices counted per (currency, plan, period, outcome, method, ...extra)."""
    rollups.refresh(engine)  # the rollups read below are brought up to date first
    with engine.connect() as conn:
        tune(conn)
        codes = plan_codes(conn)
        if day_aligned(q) and rollups.ready(conn):
            f = failed_days(q)
            keys = [f.c.currency, (f.c.plan_id if q.by == "plan" else literal("")).label("plan_id"),
                    bucket(f.c.day, q.periods()).label("b"), f.c.outcome, f.c.method, *extra(f)]
            inner = select(*keys, f.c.n, f.c.amount_minor, f.c.paid_minor, f.c.seconds).subquery("fi")
            count: Any = func.sum(inner.c.n)
        else:
            f = failed_invoices(conn, q)
            keys = [f.c.currency, (f.c.plan_id if q.by == "plan" else literal("")).label("plan_id"),
                    bucket(f.c.first_failed_at, q.periods()).label("b"), f.c.outcome, f.c.method, *extra(f)]
            inner = select(*keys, f.c.amount_minor, f.c.paid_minor, f.c.seconds).subquery("fi")
            count = func.count()
        gk = [inner.c[k.name] for k in keys]
        stmt = select(*gk, count.label("n"), func.sum(inner.c.amount_minor).label("amount"),
                      func.sum(inner.c.paid_minor).label("paid"),
                      func.coalesce(func.sum(inner.c.seconds), 0).label("seconds")).group_by(*gk)
        if q.currency:
            stmt = stmt.where(inner.c.currency == q.currency)
        return list(conn.execute(stmt)), codes


def recovery_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    periods = q.periods()
    rows_in, codes = _totals(engine, q, lambda f: [])
    cells: dict[GroupKey, list[defaultdict[str, int]]] = defaultdict(
        lambda: [defaultdict(int) for _ in periods])
    for r in rows_in:
        c = cells[group_key(r.currency, codes.get(r.plan_id, r.plan_id), q.by)][r.b]
        n, amount, paid, secs = int(r.n), int(r.amount or 0), int(r.paid or 0), int(r.seconds or 0)
        c["failed_n"] += n
        c["failed"] += amount
        c[f"{r.outcome}_n"] += n
        if r.outcome == "recovered":
            c["recovered"] += paid
            c["seconds"] += secs
            c[f"{r.method}_n"] += n
            c[f"{r.method}"] += paid
            c[f"{r.method}_s"] += secs
    cols = recovery_columns(q.by)
    out: list[dict[str, Any]] = []
    for key in sorted_groups(cells):
        group_rows = []
        for (start, end), c in zip(periods, cells[key], strict=True):
            row: dict[str, Any] = {"period_start": start, "period_end": end, **key_fields(key, q.by)}
            row.update({
                "failed_invoices": c["failed_n"], "failed_minor": c["failed"],
                "recovered_invoices": c["recovered_n"], "recovered_minor": c["recovered"],
                "recovery_rate": rate(c["recovered"], c["failed"]),
                "invoice_recovery_rate": rate(c["recovered_n"], c["failed_n"]),
                "days_to_recovery": days(c["seconds"], c["recovered_n"]),
                "in_dunning_invoices": c["in_dunning_n"], "lost_invoices": c["lost_n"],
            })
            for m in METHODS:
                row[f"{m}_invoices"] = c[f"{m}_n"]
                row[f"{m}_minor"] = c[m]
                row[f"{m}_days"] = days(c[f"{m}_s"], c[f"{m}_n"])
            group_rows.append(row)
        if not is_blank(group_rows, cols):
            out.extend(group_rows)
    return Report("recovery", "Recovery attribution", q, cols, out, generated_at)


def funnel_report(engine: Engine, q: ReportQuery, *, generated_at: datetime | None = None) -> Report:
    periods = q.periods()
    rows_in, codes = _totals(engine, q, lambda f: [f.c.decline_kind, f.c.decline_code, f.c.cancellation_kind,
                                                   f.c.reason_group])
    cells: dict[GroupKey, list[defaultdict[str, int]]] = defaultdict(
        lambda: [defaultdict(int) for _ in periods])
    for r in rows_in:
        key = group_key(r.currency, codes.get(r.plan_id, r.plan_id), q.by) + (
            r.decline_kind or NO_CODE, r.decline_code or NO_CODE)
        c = cells[key][r.b]
        n, amount, paid = int(r.n), int(r.amount or 0), int(r.paid or 0)
        c["failed_n"] += n
        c["failed"] += amount
        c[f"{r.outcome}_n"] += n
        c[r.outcome] += paid if r.outcome == "recovered" else amount
        if r.outcome == "lost":
            if r.cancellation_kind == "involuntary":
                c[f"lost_{r.reason_group}"] += n
            elif r.cancellation_kind == "voluntary":
                c["lost_voluntary"] += n
            else:
                c["lost_other"] += n
    cols = funnel_columns(q.by)
    out: list[dict[str, Any]] = []
    for key in sorted(cells):
        group_rows = []
        for (start, end), c in zip(periods, cells[key], strict=True):
            row: dict[str, Any] = {"period_start": start, "period_end": end, **key_fields(key[:-2], q.by),
                                   "decline_kind": key[-2], "decline_code": key[-1]}
            row.update({
                "failed_invoices": c["failed_n"], "failed_minor": c["failed"],
                "recovered_invoices": c["recovered_n"], "recovered_minor": c["recovered"],
                "in_dunning_invoices": c["in_dunning_n"], "in_dunning_minor": c["in_dunning"],
                "lost_invoices": c["lost_n"], "lost_minor": c["lost"],
                **{f"lost_{r}": c[f"lost_{r}"] for r in LOST_REASONS}, "lost_voluntary": c["lost_voluntary"],
                "recovery_rate": rate(c["recovered"], c["failed"]),
            })
            group_rows.append(row)
        if not is_blank(group_rows, cols):
            out.extend(group_rows)
    return Report("funnel", "Involuntary churn funnel", q, cols, out, generated_at)
