"""Reconcile the reports with the raw tables: every figure recomputed in plain Python from
the rows of subscriptions, invoices, payment attempts, refunds and plans, then compared
cell by cell with what the SQL reports return (monthly periods, with and without the plan
split). Also checks the ledger: gross collected per currency equals the succeeded payment
attempts, and the balance identities hold.

This loads the rows it checks, so it is meant for tests and the demo (thousands of rows),
not for production-size databases. ``reconcile(engine, start, end) == []`` means every
number matched exactly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing_engine.models import Event, PaymentAttempt, SubscriptionPause
from billing_engine.reports.churn import REASON_COLUMNS, churn_report
from billing_engine.reports.model import Report, is_blank, rate
from billing_engine.reports.mrr import MOVEMENTS, mrr_report
from billing_engine.reports.params import ReportQuery, build_query
from billing_engine.reports.reconcile_more import Recompute, compare, invoice_mrr
from billing_engine.reports.reconcile_more import _period as _period_of
from billing_engine.reports.reconcile_more import _reason as _reason_group
from billing_engine.reports.revenue import revenue_report
from billing_engine.reports.segments import Thresholds, normalize_thresholds, segment_names, segments_report
from billing_engine.reports.sql import invoices, plans, refunds, subscriptions

attempts = PaymentAttempt.__table__  # type: ignore[attr-defined]
events = Event.__table__  # type: ignore[attr-defined]


@dataclass
class _Raw:
    plans: dict[str, Any]
    subs: list[Any]
    invoices: list[Any]
    refunds: list[Any]
    attempts: list[Any]
    events: list[Any]
    pauses: list[Any]


def _load(engine: Engine) -> _Raw:
    with engine.connect() as c:
        return _Raw(
            plans={p.id: p for p in c.execute(select(plans))},
            subs=list(c.execute(select(subscriptions))),
            invoices=list(c.execute(select(invoices))),
            refunds=list(c.execute(select(refunds))),
            attempts=list(c.execute(select(attempts))),
            events=list(c.execute(select(events).where(events.c.type.in_(
                ("subscription.payment_method_changed", "payment_method.updated"))))),
            pauses=list(c.execute(select(SubscriptionPause.__table__))),  # type: ignore[attr-defined]
        )


class _Expected:
    """The reports' figures, computed the slow, obvious way."""

    def __init__(self, raw: _Raw, q: ReportQuery):
        self.raw, self.q = raw, q
        self.periods = q.periods()
        self.code = {pid: p.code for pid, p in raw.plans.items()}
        self.paid_by_sub: dict[str, list[Any]] = defaultdict(list)
        for inv in raw.invoices:
            if inv.status == "paid" and inv.paid_at < q.end:
                self.paid_by_sub[inv.subscription_id].append(inv)
        self.counted: dict[str, list[Any]] = {}  # subscription id -> paid invoices that count, in order
        for s in raw.subs:
            rows = [i for i in self.paid_by_sub.get(s.id, []) if s.ended_at is None or i.paid_at <= s.ended_at]
            if rows:
                self.counted[s.id] = sorted(rows, key=lambda i: i.period_start)
        self.first_churn: dict[str, datetime] = {}
        for s in raw.subs:
            if s.id in self.counted and s.ended_at is not None:
                prev = self.first_churn.get(s.customer_id)
                self.first_churn[s.customer_id] = min(prev, s.ended_at) if prev else s.ended_at

    def mrr_of(self, inv: Any) -> int:
        return invoice_mrr(self.raw.plans, inv)

    def key(self, currency: str, plan_id: str) -> tuple[str, ...]:
        return (currency, self.code[plan_id]) if self.q.by == "plan" else (currency,)

    def state_at(self, s: Any, t: datetime) -> int | None:
        """The subscription's MRR at instant t (None: not a subscriber at t)."""
        rows = self.counted.get(s.id)
        if not rows or rows[0].paid_at >= t or (s.ended_at is not None and s.ended_at < t):
            return None
        return self.mrr_of([i for i in rows if i.paid_at < t][-1])

    def subscriber_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        n = len(self.periods)
        groups: set[tuple[str, ...]] = set()
        cell: dict[tuple[tuple[str, ...], int], Counter[str]] = defaultdict(Counter)
        pauses_of: dict[str, list[Any]] = defaultdict(list)
        for p in self.raw.pauses:
            pauses_of[p.subscription_id].append(p)
        for s in self.raw.subs:
            rows = self.counted.get(s.id)
            if not rows:
                continue
            key = self.key(rows[0].currency, s.plan_id)
            groups.add(key)
            for i, (start, end) in enumerate(self.periods):
                for tag, t in (("start", start), ("end", end)):
                    m = self.state_at(s, t)
                    if m is not None:
                        cell[(key, i)][f"subs_{tag}"] += 1
                        cell[(key, i)][f"mrr_{tag}"] += m
                        if any(p.paused_at <= t and (p.resumed_at is None or p.resumed_at > t) for p in pauses_of[s.id]):
                            cell[(key, i)][f"paused_{tag}"] += 1
            act = _period_of(rows[0].paid_at, self.periods)
            if act is not None:
                fc = self.first_churn.get(s.customer_id)
                kind = "reactivation" if fc is not None and fc < rows[0].paid_at else "new"
                cell[(key, act)][kind] += self.mrr_of(rows[0])
                cell[(key, act)]["activations"] += 1
            for prev, cur in zip(rows, rows[1:], strict=False):
                at = _period_of(cur.paid_at, self.periods)
                d = self.mrr_of(cur) - self.mrr_of(prev)
                if at is not None and d:
                    cell[(key, at)]["expansion" if d > 0 else "contraction"] += abs(d)
            end_i = _period_of(s.ended_at, self.periods)
            if end_i is not None:
                lost = self.mrr_of(rows[-1])
                c = cell[(key, end_i)]
                c["churn"] += lost
                c["churned"] += 1
                kind = s.cancellation_kind or "unclassified"
                c[f"n_{kind}"] += 1
                c[f"lost_{kind}"] += lost
                if kind == "involuntary":
                    c[f"involuntary_{_reason_group(s.cancellation_reason)}"] += 1
        for inv in self.raw.invoices:
            pi = _period_of(inv.paid_at, self.periods) if inv.status == "paid" and inv.attempt_count > 1 else None
            if pi is not None:
                key = self.key(inv.currency, inv.plan_id)
                groups.add(key)
                cell[(key, pi)]["recovered_invoices"] += 1
                cell[(key, pi)]["recovered_minor"] += inv.amount_paid_minor
        for s in self.raw.subs:
            pe = _period_of(s.ended_at, self.periods)
            if pe is not None and s.id not in self.counted:
                key = self.key(self.raw.plans[s.plan_id].currency, s.plan_id)
                groups.add(key)
                cell[(key, pe)]["ended_unpaid"] += 1
        churn: list[list[dict[str, Any]]] = []
        mrr: list[list[dict[str, Any]]] = []
        for key in sorted(groups):
            crow: list[dict[str, Any]] = []
            mrow: list[dict[str, Any]] = []
            for i in range(n):
                c = cell[(key, i)]
                base = self._base(key, i)
                crow.append({**base, "active_start": c["subs_start"] - c["paused_start"], "new": c["activations"],
                             "churned": c["churned"], "voluntary": c["n_voluntary"],
                             "involuntary": c["n_involuntary"],
                             **{f"involuntary_{r}": c[f"involuntary_{r}"] for r in REASON_COLUMNS},
                             "active_end": c["subs_end"] - c["paused_end"], "paused_start": c["paused_start"],
                             "paused_end": c["paused_end"], "churn_rate": rate(c["churned"], c["subs_start"]),
                             "voluntary_rate": rate(c["n_voluntary"], c["subs_start"]),
                             "involuntary_rate": rate(c["n_involuntary"], c["subs_start"]),
                             "mrr_lost_voluntary_minor": c["lost_voluntary"],
                             "mrr_lost_involuntary_minor": c["lost_involuntary"],
                             "recovered_invoices": c["recovered_invoices"],
                             "recovered_minor": c["recovered_minor"], "ended_unpaid": c["ended_unpaid"]})
                mrow.append({**base, "subscribers_start": c["subs_start"], "subscribers_end": c["subs_end"],
                             "mrr_start_minor": c["mrr_start"], **{f"{m}_minor": c[m] for m in MOVEMENTS},
                             "net_change_minor": c["mrr_end"] - c["mrr_start"], "mrr_end_minor": c["mrr_end"]})
            churn.append(crow)
            mrr.append(mrow)
        return _flatten(churn), _flatten(mrr)

    def _base(self, key: tuple[str, ...], i: int) -> dict[str, Any]:
        d: dict[str, Any] = {"period_start": self.periods[i][0], "period_end": self.periods[i][1], "currency": key[0]}
        if self.q.by == "plan":
            d["plan_code"] = key[1]
        return d

    def revenue_rows(self) -> list[dict[str, Any]]:
        first_paid: dict[str, datetime] = {}
        for inv in self.raw.invoices:
            if inv.status == "paid" and inv.paid_at < self.q.end:
                prev = first_paid.get(inv.customer_id)
                first_paid[inv.customer_id] = min(prev, inv.paid_at) if prev else inv.paid_at
        cell: dict[tuple[tuple[str, ...], int], dict[str, Any]] = defaultdict(
            lambda: {"n": 0, "gross": 0, "disc": 0, "rn": 0, "ref": 0, "gref": 0, "cust": set(), "new": set()})
        for inv in self.raw.invoices:
            i = _period_of(inv.paid_at, self.periods) if inv.status == "paid" else None
            if i is None:
                continue
            c = cell[(self.key(inv.currency, inv.plan_id), i)]
            c["n"] += 1
            c["gross"] += inv.amount_paid_minor
            c["disc"] += inv.discount_minor
            c["cust"].add(inv.customer_id)
            if _period_of(first_paid[inv.customer_id], self.periods) == i:
                c["new"].add(inv.customer_id)
        by_id = {inv.id: inv for inv in self.raw.invoices}
        for r in self.raw.refunds:
            ri = _period_of(r.succeeded_at, self.periods) if r.status == "succeeded" else None
            if ri is not None:
                c = cell[(self.key(r.currency, by_id[r.invoice_id].plan_id), ri)]
                c["rn"] += 1
                c["ref"] += r.amount_minor
                c["gref"] += r.amount_minor if getattr(r, "guarantee", False) else 0
        out = []
        for key in sorted({k for k, _ in cell}):
            rows = []
            for i in range(len(self.periods)):
                c = cell[(key, i)]
                rows.append({**self._base(key, i), "invoices_paid": c["n"], "gross_minor": c["gross"],
                             "discounts_minor": c["disc"],
                             "refund_count": c["rn"], "refunds_minor": c["ref"],
                             "guarantee_refunds_minor": c["gref"], "net_minor": c["gross"] - c["ref"],
                             "paying_customers": len(c["cust"]), "new_customers": len(c["new"]),
                             "returning_customers": len(c["cust"]) - len(c["new"])})
            out.append(rows)
        return _flatten(out)

    def segment_rows(self, thresholds: Thresholds) -> list[dict[str, Any]]:
        default, per = normalize_thresholds(thresholds)
        by_id = {inv.id: inv for inv in self.raw.invoices}
        net: Counter[tuple[str, str, str]] = Counter()  # (customer, currency, plan) -> net
        for inv in self.raw.invoices:
            if inv.status == "paid" and inv.paid_at < self.q.end:
                net[(inv.customer_id, inv.currency, inv.plan_id)] += inv.amount_paid_minor
        for r in self.raw.refunds:
            if r.status == "succeeded" and r.succeeded_at < self.q.end:
                inv = by_id[r.invoice_id]
                net[(inv.customer_id, r.currency, inv.plan_id)] -= r.amount_minor
        cust: Counter[tuple[str, str]] = Counter()
        tiers: dict[tuple[str, str], tuple[set[str], list[int]]] = {}
        for (cid, cur, pid), amount in net.items():
            cust[(cid, cur)] += amount
            tier = self.raw.plans[pid].tier or "(none)"
            who, total = tiers.setdefault((cur, tier), (set(), [0]))
            who.add(cid)
            total[0] += amount
        rows = []
        for cur in sorted({c for _, c in cust}):
            limits = per.get(cur, default)
            values = [v for (_, c), v in cust.items() if c == cur]
            total_n, total_net = len(values), sum(values)
            for i, name in enumerate(segment_names(limits)):
                lo = limits[i - 1] if i > 0 else None
                hi = limits[i] if i < len(limits) else None
                inside = [v for v in values if (lo is None or v >= lo) and (hi is None or v < hi)]
                rows.append({"currency": cur, "dimension": "ltv", "segment": name, "customers": len(inside),
                             "net_minor": sum(inside), "customer_share": rate(len(inside), total_n),
                             "revenue_share": rate(sum(inside), total_net)})
            for (c, tier), (who, total) in sorted(tiers.items()):
                if c == cur:
                    rows.append({"currency": cur, "dimension": "tier", "segment": tier, "customers": len(who),
                                 "net_minor": total[0], "customer_share": rate(len(who), total_n),
                                 "revenue_share": rate(total[0], total_net)})
        return rows


def _flatten(groups: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rows in groups:
        out.extend(rows)
    return out


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row.get("currency"), row.get("plan_code"), row.get("dimension"), row.get("segment"),
            row.get("period_start"))


def _compare(report: Report, expected: list[dict[str, Any]], label: str) -> list[str]:
    cols = report.columns
    keys = [c.key for c in cols if c.kind in ("count", "money", "rate")]
    # drop groups with nothing to show, exactly as the reports do
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in expected:
        groups[(row.get("currency"), row.get("plan_code"), row.get("dimension"))].append(row)
    wanted = {_row_key(r): r for rows in groups.values() if not is_blank(rows, cols) or rows[0].get("dimension")
              for r in rows}
    got = {_row_key(r): r for r in report.rows}
    out = []
    for k in sorted(set(wanted) | set(got), key=repr):
        w, g = wanted.get(k), got.get(k)
        where = f"{label}[{'/'.join(str(x) for x in k[:4] if x)} {k[4].date() if k[4] else ''}]".replace(" ]", "]")
        if w is None or g is None:
            out.append(f"{where}: {'missing from the report' if g is None else 'not expected'}")
            continue
        for key in keys:
            if w.get(key) != g.get(key):
                out.append(f"{where} {key}: report {g.get(key)!r} != raw {w.get(key)!r}")
    return out


def _identities(churn: Report, mrr: Report, label: str) -> list[str]:
    out = []
    for r in mrr.rows:
        moved = (r["mrr_start_minor"] + r["new_minor"] + r["reactivation_minor"] + r["expansion_minor"]
                 - r["contraction_minor"] - r["churn_minor"])
        if moved != r["mrr_end_minor"]:
            out.append(f"{label} mrr identity broken at {_row_key(r)}: {moved} != {r['mrr_end_minor']}")
    for r in churn.rows:
        if r["active_start"] + r["paused_start"] + r["new"] - r["churned"] != r["active_end"] + r["paused_end"]:
            out.append(f"{label} churn identity broken at {_row_key(r)}")
        if sum(r[f"involuntary_{x}"] for x in REASON_COLUMNS) != r["involuntary"]:
            out.append(f"{label} involuntary reasons do not add up at {_row_key(r)}")
    return out


def _more(engine: Engine, raw: _Raw, q: ReportQuery, label: str) -> list[str]:
    """Cohorts, revenue retention, recovery attribution, funnel vs their recomputation."""
    from billing_engine.reports.cohorts import cohorts_report
    from billing_engine.reports.recovery import funnel_report, recovery_report
    from billing_engine.reports.retention import retention_report

    exp = Recompute(raw, q.start, q.end, q.periods(), q.by)
    return (compare(cohorts_report(engine, q), exp.cohorts(), f"cohorts {label}")
            + compare(retention_report(engine, q), exp.retention(), f"retention {label}")
            + compare(recovery_report(engine, q), exp.recovery(), f"recovery {label}")
            + compare(funnel_report(engine, q), exp.funnel(), f"funnel {label}"))


def currency_filter_problems(engine: Engine, q: ReportQuery, names: Iterable[str]) -> list[str]:
    """``--currency C`` must be a filter and nothing else: every report run with it equals the
    unfiltered report's rows of currency C, cell by cell."""
    from billing_engine.reports import run_report  # the registry of every report

    out: list[str] = []
    for name in names:
        everything = run_report(engine, name, replace(q, currency=None))
        for cur in sorted({r["currency"] for r in everything.rows}):
            want = [r for r in everything.rows if r["currency"] == cur]
            got = run_report(engine, name, replace(q, currency=cur)).rows
            if got != want:
                diff = [f"{_row_key(g)}" for g, w in zip(got, want, strict=False) if g != w][:3]
                out.append(f"{name} --currency {cur} differs from the unfiltered rows of {cur} "
                           f"({len(got)} vs {len(want)} rows; first differences at {diff})")
    return out


def reconcile(engine: Engine, start: datetime, end: datetime, *,
              thresholds: Thresholds = (10_000, 100_000)) -> list[str]:
    """Every mismatch between the reports and the raw rows over ``[start, end)`` (monthly)."""
    raw = _load(engine)
    problems: list[str] = []
    for by in (None, "plan"):
        q = build_query(start=start, end=end, period="month", by=by, now=end)
        exp = _Expected(raw, q)
        label = f"by={by or '-'}"
        churn, mrr, revenue = churn_report(engine, q), mrr_report(engine, q), revenue_report(engine, q)
        want_churn, want_mrr = exp.subscriber_rows()
        problems += _compare(churn, want_churn, f"churn {label}")
        problems += _compare(mrr, want_mrr, f"mrr {label}")
        problems += _compare(revenue, exp.revenue_rows(), f"revenue {label}")
        problems += _identities(churn, mrr, label)
        problems += _more(engine, raw, q, label)
        problems += currency_filter_problems(engine, q, ("churn", "mrr", "revenue", "segments", "cohorts",
                                                         "retention", "recovery", "funnel"))
        if by is None:
            problems += _compare(segments_report(engine, q, thresholds=thresholds),
                                 exp.segment_rows(thresholds), "segments")
            # the ledger: money in, per currency, from the attempts table
            collected: Counter[str] = Counter()
            for a in raw.attempts:
                if a.status == "succeeded" and a.completed_at is not None and start <= a.completed_at < end:
                    collected[a.currency] += a.amount_minor
            gross: Counter[str] = Counter()
            for r in revenue.rows:
                gross[r["currency"]] += r["gross_minor"]
            for cur in sorted(set(collected) | set(gross)):
                if collected[cur] != gross[cur]:
                    problems.append(f"ledger {cur}: succeeded attempts {collected[cur]} != gross collected {gross[cur]}")
    return problems
