"""Subscriber timelines: the aggregated event stream of :func:`sql.subscriber_events`, laid
out per group (currency, or currency + plan) and period, with opening balances.

The database returns one row per (currency, plan, period, kind, ..., billed price) group
with a count; this module turns each price into MRR with
:func:`billing_engine.periods.monthly_amount` (times the count) and adds the groups up
(running balances). It never sees individual subscriptions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.engine import Connection, Engine

from billing_engine.periods import Interval, monthly_amount
from billing_engine.reports import rollups
from billing_engine.reports.day_rollups import GRAINS, sub_event_days_table
from billing_engine.reports.model import Column, Report, is_blank
from billing_engine.reports.params import ReportQuery, period_aligned
from billing_engine.reports.sql import bucket, plans, subscriber_event_totals, ts, tune

GroupKey = tuple[str, ...]  # (currency,) or (currency, plan_code)


@dataclass
class PeriodMoves:
    counts: Counter[str] = field(default_factory=Counter)  # kind -> subscriptions
    mrr: Counter[str] = field(default_factory=Counter)  # kind -> minor units (positive magnitudes)
    churn_by_kind: Counter[str] = field(default_factory=Counter)  # voluntary | involuntary | unclassified
    churn_mrr_by_kind: Counter[str] = field(default_factory=Counter)
    involuntary_by_reason: Counter[str] = field(default_factory=Counter)
    # movements of the subscribers active at the period start only (revenue retention)
    existing_mrr: Counter[str] = field(default_factory=Counter)  # churn | expansion | contraction

    def is_empty(self) -> bool:
        return not (+self.counts or +self.mrr)


@dataclass
class Timeline:
    opening_subs: int = 0
    opening_mrr: int = 0
    periods: list[PeriodMoves] = field(default_factory=list)

    def balances(self) -> list[tuple[int, int, int, int]]:
        """Per period: (subs_start, subs_end, mrr_start, mrr_end)."""
        out = []
        subs, mrr = self.opening_subs, self.opening_mrr
        for p in self.periods:
            s0, m0 = subs, mrr
            subs += p.counts["new"] + p.counts["reactivation"] - p.counts["churn"]
            mrr += (p.mrr["new"] + p.mrr["reactivation"] + p.mrr["expansion"]
                    - p.mrr["contraction"] - p.mrr["churn"])
            out.append((s0, subs, m0, mrr))
        return out


def group_key(currency: str, plan_code: str | None, by: str | None) -> GroupKey:
    return (currency, plan_code or "") if by == "plan" else (currency,)


def day_event_totals(q: ReportQuery) -> Any:
    """:func:`sql.subscriber_event_totals` read off ``report_sub_event_days`` (a few rows per
    day) -- for a :func:`params.period_aligned` range: every period boundary is midnight, so
    an event's period is its day's, and the first period is a whole calendar period, so a
    churn / change is one of a subscriber active at the period start exactly when the
    subscription was not activated in the same calendar period (``act_same``)."""
    d = sub_event_days_table
    periods = q.periods()
    b = bucket(d.c.day, periods)
    same = d.c.act_same.op("&")(1 << GRAINS.index(q.period)) != 0
    ab = case((d.c.kind.in_(("churn", "change")) & same, b), else_=literal(-1))
    inner = select(d.c.currency, d.c.plan_id, b.label("b"), ab.label("ab"), d.c.kind, d.c.cancellation_kind,
                   d.c.reason_group, d.c.mrr_minor, d.c.inv_plan_id, d.c.amount_minor, d.c.prev_plan_id,
                   d.c.prev_amount, d.c.n).where(d.c.day < ts(q.end))
    if q.currency:
        inner = inner.where(d.c.currency == q.currency)
    sq = inner.subquery("ev_days")
    keys = [c for c in sq.c if c.name != "n"]
    return select(*keys, func.sum(sq.c.n).label("n")).group_by(*keys)


def timelines(conn: Connection, q: ReportQuery) -> dict[GroupKey, Timeline]:
    n_periods = len(q.periods())
    plan_rows = {r.id: r for r in conn.execute(select(plans.c.id, plans.c.code, plans.c.amount_minor,
                                                       plans.c.interval, plans.c.interval_count))}
    # each plan's price, normalised: the MRR of a subscription billed at its plan's price
    plan_mrr = {p.id: monthly_amount(int(p.amount_minor), Interval(p.interval), int(p.interval_count))
                for p in plan_rows.values()}

    def mrr(plan_id: str | None, amount: int | None, stored: int | None = None) -> int:
        if stored is not None:
            return int(stored)  # subscriptions.mrr_minor, already normalised
        p = plan_rows[plan_id] if plan_id is not None else None
        if p is None or amount is None:
            return 0
        return monthly_amount(int(amount), Interval(p.interval), int(p.interval_count))

    out: dict[GroupKey, Timeline] = {}
    from billing_engine.reports.rollups import ready

    stmt = day_event_totals(q) if period_aligned(q) and ready(conn) else subscriber_event_totals(q, plan_mrr)
    for r in conn.execute(stmt):
        code = plan_rows[r.plan_id].code if r.plan_id in plan_rows else r.plan_id
        key = group_key(r.currency, code, q.by)
        tl = out.get(key)
        if tl is None:
            tl = out[key] = Timeline(periods=[PeriodMoves() for _ in range(n_periods)])
        n = int(r.n)
        value = mrr(r.inv_plan_id, r.amount_minor, r.mrr_minor)
        if r.kind == "change":
            delta = n * (value - mrr(r.prev_plan_id, r.prev_amount))
            kind = "expansion" if delta > 0 else "contraction"
        elif r.kind == "churn":
            delta, kind = -n * value, "churn"
        else:
            delta, kind = n * value, r.kind
        if r.b < 0:
            tl.opening_subs += {"churn": -n, "change": 0, "ended_unpaid": 0}.get(r.kind, n)
            tl.opening_mrr += delta
            continue
        if r.b >= n_periods or (r.kind == "change" and delta == 0):
            continue  # past the range (cannot happen) / a price change that leaves MRR as it was
        p = tl.periods[r.b]
        p.counts[kind] += n
        p.mrr[kind] += abs(delta)
        if kind in ("churn", "expansion", "contraction") and r.ab < r.b:
            p.existing_mrr[kind] += abs(delta)
        if kind == "churn":
            ckind = r.cancellation_kind or "unclassified"
            p.churn_by_kind[ckind] += n
            p.churn_mrr_by_kind[ckind] += abs(delta)
            if ckind == "involuntary":
                p.involuntary_by_reason[r.reason_group] += n
    return out


def sorted_groups(*maps: dict[GroupKey, Any]) -> list[GroupKey]:
    keys: set[GroupKey] = set()
    for m in maps:
        keys.update(m)
    return sorted(keys)


def key_fields(key: GroupKey, by: str | None) -> dict[str, str]:
    d = {"currency": key[0]}
    if by == "plan":
        d["plan_code"] = key[1]
    return d


# (timeline, period index, (subs_start, subs_end, mrr_start, mrr_end)) -> a row's own columns
RowOf = Callable[[Timeline, int, tuple[int, int, int, int]], dict[str, Any]]


def timeline_report(engine: Engine, q: ReportQuery, name: str, title: str, cols: tuple[Column, ...],
                    row_of: RowOf, generated_at: datetime | None) -> Report:
    """A report with one row per period (and group) of the subscriber timelines (MRR,
    retention): the rollups brought up to date, groups in order, all-zero groups left out."""
    rollups.refresh(engine)  # the rollups read below are brought up to date first
    with engine.connect() as conn:
        tune(conn)
        tls = timelines(conn, q)
    rows: list[dict[str, Any]] = []
    for key in sorted_groups(tls):
        tl = tls[key]
        group_rows = [{"period_start": start, "period_end": end, **key_fields(key, q.by), **row_of(tl, i, balance)}
                      for i, ((start, end), balance) in enumerate(zip(q.periods(), tl.balances(), strict=True))]
        if not is_blank(group_rows, cols):
            rows.extend(group_rows)
    return Report(name, title, q, cols, rows, generated_at)
