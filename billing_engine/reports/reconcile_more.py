"""The independent recomputation of the cohorts, revenue retention, recovery attribution and
funnel reports: plain Python over the raw rows (subscriptions, invoices, payment attempts,
events), sharing nothing with the SQL but the definitions in docs/reports.md. Called by
:func:`billing_engine.reports.reconcile`; meant for tests and the demo, not for big databases.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from billing_engine.periods import Interval, monthly_amount
from billing_engine.reports.model import Report, rate

Periods = list[tuple[datetime, datetime]]
METHODS = ("automatic_retry", "customer_card_update", "card_updater", "admin")
LOST_REASONS = ("payment_failed", "hard_decline", "card_expired", "dispute", "other")


def invoice_mrr(plans: dict[str, Any], inv: Any) -> int:
    """An invoice's monthly amount; a proration invoice (a plan change) counts at its plan's price."""
    p = plans[inv.plan_id]
    amount = p.amount_minor if getattr(inv, "kind", "period") == "proration" else inv.amount_minor
    return monthly_amount(amount, Interval(p.interval), p.interval_count)


def _period(at: datetime | None, periods: Periods) -> int | None:
    if at is None:
        return None
    for i, (s, e) in enumerate(periods):
        if s <= at < e:
            return i
    return None


def _reason(reason: str | None) -> str:
    if reason in ("payment_failed", "dispute", "card_expired"):
        return reason
    return "hard_decline" if reason and reason.startswith("hard_decline:") else "other"


def _days(seconds: int, n: int) -> Decimal | None:
    return None if n == 0 else (Decimal(seconds) / n / Decimal(86400)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


class Recompute:
    def __init__(self, raw: Any, start: datetime, end: datetime, periods: Periods, by: str | None):
        self.raw, self.start, self.end, self.periods, self.by = raw, start, end, periods, by
        self.code = {pid: p.code for pid, p in raw.plans.items()}
        self.paid: dict[str, list[Any]] = defaultdict(list)  # subscription -> paid invoices before the end
        for inv in raw.invoices:
            if inv.status == "paid" and inv.paid_at < end:
                self.paid[inv.subscription_id].append(inv)
        # first payment per subscription, recomputed from the invoices (not subscriptions.activated_at)
        self.activated = {sid: min(i.paid_at for i in rows) for sid, rows in self.paid.items()}

    def key(self, currency: str, plan_id: str) -> tuple[str, ...]:
        return (currency, self.code[plan_id]) if self.by == "plan" else (currency,)

    def fields(self, key: tuple[str, ...]) -> dict[str, str]:
        d = {"currency": key[0]}
        if self.by == "plan":
            d["plan_code"] = key[1]
        return d

    def mrr_of(self, inv: Any) -> int:
        return invoice_mrr(self.raw.plans, inv)

    # -- cohorts ---------------------------------------------------------------------------
    def cohorts(self) -> list[dict[str, Any]]:
        n = len(self.periods)
        subs_of: dict[str, list[Any]] = defaultdict(list)
        for s in self.raw.subs:
            if s.id in self.activated:
                subs_of[s.customer_id].append(s)
        cohort: dict[str, tuple[tuple[str, ...], int]] = {}
        for cid, subs in subs_of.items():
            first = min(subs, key=lambda s: (self.activated[s.id], s.id))
            i = _period(self.activated[first.id], self.periods)
            if i is not None:
                cohort[cid] = (self.key(self.raw.plans[first.plan_id].currency, first.plan_id), i)
        size: Counter[tuple[tuple[str, ...], int]] = Counter(cohort.values())
        kept: Counter[tuple[tuple[str, ...], int, int]] = Counter()
        money: Counter[tuple[tuple[str, ...], int, int]] = Counter()
        for cid, (key, i) in cohort.items():
            for j in range(i, n):
                ps, pe = self.periods[j]
                if any(self.activated[s.id] < pe and (s.ended_at is None or (self.activated[s.id] <= s.ended_at
                                                                             and s.ended_at >= ps))
                       for s in subs_of[cid]):
                    kept[(key, i, j)] += 1
        for inv in self.raw.invoices:
            if inv.status != "paid" or inv.customer_id not in cohort:
                continue
            key, i = cohort[inv.customer_id]
            paid_in = _period(inv.paid_at, self.periods)
            if paid_in is not None and inv.currency == key[0]:
                money[(key, i, paid_in)] += inv.amount_paid_minor
        rows = []
        for (key, i) in sorted(size):
            for j in range(i, n):
                rows.append({"cohort_start": self.periods[i][0], "cohort_end": self.periods[i][1], **self.fields(key),
                             "periods_since": j - i, "customers": size[(key, i)],
                             "retained_customers": kept[(key, i, j)],
                             "lost_customers": size[(key, i)] - kept[(key, i, j)],
                             "customer_retention": rate(kept[(key, i, j)], size[(key, i)]),
                             "revenue_minor": money[(key, i, j)],
                             "revenue_retention": rate(money[(key, i, j)], money[(key, i, i)])})
        return rows

    # -- revenue retention -----------------------------------------------------------------
    def retention(self) -> list[dict[str, Any]]:
        cell: dict[tuple[tuple[str, ...], int], Counter[str]] = defaultdict(Counter)
        groups = set()
        for s in self.raw.subs:
            rows = sorted((i for i in self.paid.get(s.id, []) if s.ended_at is None or i.paid_at <= s.ended_at),
                          key=lambda i: i.period_start)
            if not rows:
                continue
            key = self.key(rows[0].currency, s.plan_id)
            groups.add(key)
            for p, (ps, pe) in enumerate(self.periods):
                before = [i for i in rows if i.paid_at < ps]
                if not before or (s.ended_at is not None and s.ended_at < ps):
                    continue  # not a subscriber at the period start
                c = cell[(key, p)]
                c["subs"] += 1
                c["start"] += self.mrr_of(before[-1])
                for prev, cur in zip(rows, rows[1:], strict=False):
                    if ps <= cur.paid_at < pe:
                        d = self.mrr_of(cur) - self.mrr_of(prev)
                        c["expansion" if d > 0 else "contraction"] += abs(d)
                if s.ended_at is not None and ps <= s.ended_at < pe:
                    c["churn"] += self.mrr_of(rows[-1])
        out = []
        for key in sorted(groups):
            for p, (ps, pe) in enumerate(self.periods):
                c = cell[(key, p)]
                m0, ch, co, ex = c["start"], c["churn"], c["contraction"], c["expansion"]
                out.append({"period_start": ps, "period_end": pe, **self.fields(key), "subscribers_start": c["subs"],
                            "mrr_start_minor": m0, "churn_minor": ch, "contraction_minor": co, "expansion_minor": ex,
                            "mrr_retained_minor": m0 - ch - co + ex, "grr": rate(m0 - ch - co, m0),
                            "nrr": rate(m0 - ch - co + ex, m0)})
        return out

    # -- recovery attribution and funnel ---------------------------------------------------
    def failed(self) -> list[dict[str, Any]]:
        by_inv: dict[str, list[Any]] = defaultdict(list)
        for a in self.raw.attempts:
            by_inv[a.invoice_id].append(a)
        subs = {s.id: s for s in self.raw.subs}
        out = []
        for inv in self.raw.invoices:
            fails = [a for a in by_inv.get(inv.id, []) if a.status == "failed"]
            if not fails:
                continue
            first = min(fails, key=lambda a: a.attempt_number)
            if not (self.start <= first.completed_at < self.end):
                continue
            recovered = inv.status == "paid" and inv.paid_at < self.end
            lost = inv.status in ("uncollectible", "void") and inv.closed_at is not None and inv.closed_at < self.end
            method, seconds = None, 0
            if recovered:
                ok = [a for a in by_inv[inv.id] if a.status == "succeeded"]
                pm = ok[0].payment_method_id if ok else None
                latest: dict[str, datetime] = {}
                for e in self.raw.events:
                    if not (first.completed_at < e.occurred_at <= inv.paid_at):
                        continue
                    if e.type == "subscription.payment_method_changed" and e.subscription_id == inv.subscription_id:
                        who = "admin" if e.actor == "admin" or e.actor.startswith("admin:") else "customer_card_update"
                    elif (e.type == "payment_method.updated" and e.actor == "stripe:webhook"
                          and e.customer_id == inv.customer_id
                          and json.loads(e.payload).get("payment_method_id") == pm):
                        who = "card_updater"
                    else:
                        continue
                    latest[who] = max(latest.get(who, e.occurred_at), e.occurred_at)
                method = "automatic_retry"
                if latest:
                    order = {"admin": 0, "customer_card_update": 1, "card_updater": 2}
                    method = min(latest, key=lambda m: (-latest[m].timestamp(), order[m]))
                seconds = round((inv.paid_at - first.completed_at).total_seconds())
            s = subs[inv.subscription_id]
            out.append({"inv": inv, "first": first, "outcome": "recovered" if recovered else "lost" if lost
                        else "in_dunning", "method": method, "seconds": seconds, "sub": s})
        return out

    def recovery(self) -> list[dict[str, Any]]:
        cell: dict[tuple[tuple[str, ...], int], Counter[str]] = defaultdict(Counter)
        for f in self.failed():
            inv = f["inv"]
            p = _period(f["first"].completed_at, self.periods)
            assert p is not None
            c = cell[(self.key(inv.currency, inv.plan_id), p)]
            c["failed_n"] += 1
            c["failed"] += inv.amount_minor
            c[f"{f['outcome']}_n"] += 1
            if f["outcome"] == "recovered":
                m = f["method"]
                c["recovered"] += inv.amount_paid_minor
                c["seconds"] += f["seconds"]
                c[f"{m}_n"] += 1
                c[m] += inv.amount_paid_minor
                c[f"{m}_s"] += f["seconds"]
        out = []
        for key in sorted({k for k, _ in cell}):
            for p, (ps, pe) in enumerate(self.periods):
                c = cell[(key, p)]
                row = {"period_start": ps, "period_end": pe, **self.fields(key), "failed_invoices": c["failed_n"],
                       "failed_minor": c["failed"], "recovered_invoices": c["recovered_n"],
                       "recovered_minor": c["recovered"], "recovery_rate": rate(c["recovered"], c["failed"]),
                       "invoice_recovery_rate": rate(c["recovered_n"], c["failed_n"]),
                       "days_to_recovery": _days(c["seconds"], c["recovered_n"]),
                       "in_dunning_invoices": c["in_dunning_n"], "lost_invoices": c["lost_n"]}
                for m in METHODS:
                    row.update({f"{m}_invoices": c[f"{m}_n"], f"{m}_minor": c[m],
                                f"{m}_days": _days(c[f"{m}_s"], c[f"{m}_n"])})
                out.append(row)
        return out

    def funnel(self) -> list[dict[str, Any]]:
        cell: dict[tuple[tuple[str, ...], int], Counter[str]] = defaultdict(Counter)
        for f in self.failed():
            inv, first, s = f["inv"], f["first"], f["sub"]
            p = _period(first.completed_at, self.periods)
            assert p is not None
            key = self.key(inv.currency, inv.plan_id) + (first.decline_kind or "(none)", first.decline_code or "(none)")
            c = cell[(key, p)]
            c["failed_n"] += 1
            c["failed"] += inv.amount_minor
            c[f"{f['outcome']}_n"] += 1
            c[f["outcome"]] += inv.amount_paid_minor if f["outcome"] == "recovered" else inv.amount_minor
            if f["outcome"] == "lost":
                if s.cancellation_kind == "involuntary":
                    c[f"lost_{_reason(s.cancellation_reason)}"] += 1
                elif s.cancellation_kind == "voluntary":
                    c["lost_voluntary"] += 1
                else:
                    c["lost_other"] += 1
        out = []
        for key in sorted({k for k, _ in cell}):
            for p, (ps, pe) in enumerate(self.periods):
                c = cell[(key, p)]
                out.append({"period_start": ps, "period_end": pe, **self.fields(key[:-2]), "decline_kind": key[-2],
                            "decline_code": key[-1], "failed_invoices": c["failed_n"], "failed_minor": c["failed"],
                            "recovered_invoices": c["recovered_n"], "recovered_minor": c["recovered"],
                            "in_dunning_invoices": c["in_dunning_n"], "in_dunning_minor": c["in_dunning"],
                            "lost_invoices": c["lost_n"], "lost_minor": c["lost"],
                            **{f"lost_{r}": c[f"lost_{r}"] for r in LOST_REASONS},
                            "lost_voluntary": c["lost_voluntary"], "recovery_rate": rate(c["recovered"], c["failed"])})
        return out


def compare(report: Report, expected: list[dict[str, Any]], label: str) -> list[str]:
    """Cell-by-cell differences; rows are keyed by their time and text columns (and, for
    cohorts, periods_since). Expected groups with nothing to show are dropped, as the reports do."""
    measures = [c.key for c in report.columns if c.kind in ("count", "money", "rate", "decimal")
                and c.key != "periods_since"]
    amounts = [c.key for c in report.columns if c.kind in ("count", "money") and c.key != "periods_since"]
    keys = [c.key for c in report.columns if c.kind in ("time", "text")] + (
        ["periods_since"] if any(c.key == "periods_since" for c in report.columns) else [])
    group_keys = [k for k in keys if k not in ("period_start", "period_end", "periods_since")]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in expected:
        groups[tuple(row.get(k) for k in group_keys)].append(row)
    wanted = {tuple(r.get(k) for k in keys): r for rows in groups.values()
              if any(r.get(m) for r in rows for m in amounts) for r in rows}
    got = {tuple(r.get(k) for k in keys): r for r in report.rows}
    out = []
    for k in sorted(set(wanted) | set(got), key=repr):
        w, g = wanted.get(k), got.get(k)
        where = f"{label}[{'/'.join(str(x)[:10] for x in k if x is not None)}]"
        if w is None or g is None:
            out.append(f"{where}: {'missing from the report' if g is None else 'not expected'}")
            continue
        out += [f"{where} {m}: report {g.get(m)!r} != raw {w.get(m)!r}" for m in measures if w.get(m) != g.get(m)]
    return out
