"""What the dashboard page shows, built from the very same reports the CLI and the API
export (so every number on the page matches them): MRR over time, churn per month
stacked voluntary vs involuntary, revenue by plan -- as inline SVG -- plus the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing_engine.money import format_minor
from billing_engine.reports.charts import NARROW, WIDE, Series, bar_chart, line_chart
from billing_engine.reports.churn import churn_report
from billing_engine.reports.cohorts import cohorts_report
from billing_engine.reports.dunning_facts import METHODS
from billing_engine.reports.export import period_label
from billing_engine.reports.model import rate
from billing_engine.reports.mrr import mrr_report
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.recovery import funnel_report, recovery_report
from billing_engine.reports.retention import retention_report
from billing_engine.reports.revenue import revenue_report
from billing_engine.reports.sql import plans, subscriptions


@dataclass
class Dashboard:
    query: ReportQuery
    currency: str | None
    currencies: list[str]
    tiles: list[tuple[str, str]] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)  # per chart: a wide and a narrow SVG (see responsive)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (caption, headers, rows)
    tiles_extra: list[tuple[str, str]] = field(default_factory=list)


def _pct(v: Decimal | None) -> str:
    return "-" if v is None else f"{(v * 100).quantize(Decimal('0.01'))}%"


def responsive(draw: Any, *args: Any, **kw: Any) -> str:
    """The chart drawn twice, for desktop and for phones; the page's CSS shows one of them.
    Each SVG has only a viewBox, so it also scales within its own layout."""
    return (f'<div class="wide">{draw(*args, width=WIDE, **kw)}</div>'
            f'<div class="narrow">{draw(*args, width=NARROW, **kw)}</div>')


def currencies(engine: Engine) -> list[str]:
    """Currencies with plans, the one with the most subscriptions first."""
    subs = select(subscriptions.c.plan_id, func.count().label("n")).group_by(subscriptions.c.plan_id).subquery()
    stmt = (select(plans.c.currency, func.coalesce(func.sum(subs.c.n), 0).label("n"))
            .select_from(plans.outerjoin(subs, subs.c.plan_id == plans.c.id)).group_by(plans.c.currency))
    with engine.connect() as conn:
        rows = [(r[0], int(r[1])) for r in conn.execute(stmt)]
    return [c for c, _ in sorted(rows, key=lambda r: (-r[1], r[0]))]


def build(engine: Engine, q: ReportQuery) -> Dashboard:
    """``q.currency`` picks the currency (default: the one with the most subscriptions)."""
    curs = currencies(engine)
    cur = q.currency or (curs[0] if curs else None)
    q = replace(q, currency=cur, by=None)
    d = Dashboard(query=q, currency=cur, currencies=curs)
    if cur is None:
        return d
    periods = q.periods()
    labels = [period_label(s, e) for s, e in periods]
    mrr = {r["period_start"]: r for r in mrr_report(engine, q).rows}
    churn = {r["period_start"]: r for r in churn_report(engine, q).rows}
    rev_rows = revenue_report(engine, replace(q, by="plan")).rows
    zero: dict[str, Any] = {}

    def money(v: int) -> str:
        return format_minor(v, cur)

    def col(rows: dict[Any, dict[str, Any]], key: str) -> list[int]:
        return [int(rows.get(s, zero).get(key) or 0) for s, _ in periods]

    mrr_end = col(mrr, "mrr_end_minor")
    d.charts.append(responsive(line_chart, labels, [Series("MRR", mrr_end)], title=f"MRR at period end ({cur})",
                               fmt=money))
    d.charts.append(responsive(bar_chart, labels, [Series("voluntary", col(churn, "voluntary"), "#d97706"),
                                                   Series("involuntary", col(churn, "involuntary"), "#dc2626")],
                               title="Churned subscriptions per period", fmt=str))
    plan_codes = sorted({r["plan_code"] for r in rev_rows})
    by_plan = [Series(code, [next((int(r["net_minor"]) for r in rev_rows
                                   if r["plan_code"] == code and r["period_start"] == s), 0) for s, _ in periods])
               for code in plan_codes]
    d.charts.append(responsive(bar_chart, labels, by_plan or [Series("net", [0] * len(periods))],
                               title=f"Net revenue by plan ({cur})", fmt=money))

    _retention_and_recovery(engine, q, d, labels, money)

    last = periods[-1][0]
    net_total = sum(int(r["net_minor"]) for r in rev_rows)
    d.tiles = [
        ("MRR (end of range)", f"{money(mrr_end[-1] if mrr_end else 0)} {cur}"),
        ("Subscribers (end of range)", str(mrr.get(last, zero).get("subscribers_end", 0))),
        ("Churn rate, last period", _pct(churn.get(last, zero).get("churn_rate"))),
        ("Net revenue in range", f"{money(net_total)} {cur}"),
        ("Recovered by dunning", f"{money(sum(col(churn, 'recovered_minor')))} {cur}"),
        *d.tiles_extra,
    ]
    rev_totals = {s: (sum(int(r["gross_minor"]) for r in rev_rows if r["period_start"] == s),
                      sum(int(r["refunds_minor"]) for r in rev_rows if r["period_start"] == s)) for s, _ in periods}
    d.headers = ["period", "MRR end", "new", "expansion", "contraction", "churned MRR", "active at start",
                 "voluntary", "involuntary", "churn rate", "gross", "refunds", "net"]
    for (s, _), label in zip(periods, labels, strict=True):
        m, c = mrr.get(s, zero), churn.get(s, zero)
        gross, refunded = rev_totals[s]
        d.rows.append([
            label, money(int(m.get("mrr_end_minor", 0))),
            money(int(m.get("new_minor", 0)) + int(m.get("reactivation_minor", 0))),
            money(int(m.get("expansion_minor", 0))), money(int(m.get("contraction_minor", 0))),
            money(int(m.get("churn_minor", 0))), str(c.get("active_start", 0)), str(c.get("voluntary", 0)),
            str(c.get("involuntary", 0)), _pct(c.get("churn_rate")), money(gross), money(refunded),
            money(gross - refunded),
        ])
    return d


def _bp(v: Decimal | None) -> int:
    """A rate as basis points (the charts draw integers)."""
    return 0 if v is None else int(v * 10000)


def _retention_and_recovery(engine: Engine, q: ReportQuery, d: Dashboard, labels: list[str], money: Any) -> None:
    """GRR / NRR (line), recovered revenue by method (stacked bars), the cohort table and the
    funnel per decline code -- from the same reports as the exports."""
    periods = q.periods()
    ret = {r["period_start"]: r for r in retention_report(engine, q).rows}
    d.charts.append(responsive(line_chart, labels, [
        Series("GRR", [_bp(ret.get(s, {}).get("grr")) for s, _ in periods], "#2563eb"),
        Series("NRR", [_bp(ret.get(s, {}).get("nrr")) for s, _ in periods], "#16a34a")],
        title="Revenue retention (GRR / NRR)", fmt=lambda v: f"{v / 100:.0f}%",
        gaps=[[ret.get(s, {}).get(k) is None for s, _ in periods] for k in ("grr", "nrr")]))
    rec = {r["period_start"]: r for r in recovery_report(engine, q).rows}
    colors = ("#2563eb", "#16a34a", "#d97706", "#7c3aed")
    d.charts.append(responsive(bar_chart, labels, [
        Series(m.replace("_", " "), [int(rec.get(s, {}).get(f"{m}_minor") or 0) for s, _ in periods], c)
        for m, c in zip(METHODS, colors, strict=True)],
        title=f"Recovered after a failed payment, by what recovered it ({q.currency})", fmt=money))
    total_failed = sum(int(r["failed_minor"]) for r in rec.values())
    total_rec = sum(int(r["recovered_minor"]) for r in rec.values())
    d.tiles_extra = [("Recovery rate in range", _pct(rate(total_rec, total_failed)))]

    cohorts = cohorts_report(engine, q).rows
    span = max((int(r["periods_since"]) for r in cohorts), default=-1) + 1
    by_cohort: dict[Any, dict[int, Any]] = {}
    for r in cohorts:
        by_cohort.setdefault(r["cohort_start"], {})[int(r["periods_since"])] = r
    d.tables.append((
        f"Cohorts: customers still subscribed, by month of first payment ({q.currency})",
        ["cohort", "customers", *[f"+{k}" for k in range(span)]],
        [[period_label(start, rows[0]["cohort_end"]), str(rows[0]["customers"]),
          *[_pct(rows[k]["customer_retention"]) if k in rows else "" for k in range(span)]]
         for start, rows in sorted(by_cohort.items())],
    ))
    funnel: dict[tuple[str, str], list[int]] = {}
    for r in funnel_report(engine, q).rows:
        f = funnel.setdefault((r["decline_kind"], r["decline_code"]), [0, 0, 0, 0])
        for i, k in enumerate(("failed_invoices", "recovered_invoices", "in_dunning_invoices", "lost_invoices")):
            f[i] += int(r[k])
    d.tables.append((
        f"Involuntary churn funnel in range, per decline code ({q.currency})",
        ["decline", "kind", "failed", "recovered", "in dunning", "lost", "recovered %"],
        [[code, kind, *map(str, f), _pct(rate(f[1], f[0]))]
         for (kind, code), f in sorted(funnel.items(), key=lambda kv: -kv[1][0])],
    ))
