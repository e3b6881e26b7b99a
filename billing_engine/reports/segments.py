"""Customer segments, per currency, as of the range end:

- ``ltv``: customers bucketed by lifetime value = net collected (paid invoices minus
  succeeded refunds, everything before ``to``), with thresholds in minor units
  (``settings.segment_thresholds_minor``; a mapping gives per-currency thresholds);
- ``tier``: the same customers' net collected split by the tier of the plan paid for
  (``plans.tier``; ``(none)`` when unset).

Customers included: everyone who paid anything before ``to`` (``from`` is not used: a
lifetime value has no start). Each row has the customer count, the net amount and both
shares of the currency's total (a customer who paid for two tiers counts in both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, case, cast, func, literal, select, union_all
from sqlalchemy.engine import Engine

from billing_engine.errors import ValidationError
from billing_engine.money import format_minor, normalize_currency
from billing_engine.reports.model import Column, Report, rate
from billing_engine.reports.params import ReportQuery
from billing_engine.reports.sql import invoices, plans, refunds, ts, tune

Thresholds = Sequence[int] | Mapping[str, Sequence[int]]
NO_TIER = "(none)"


def columns() -> tuple[Column, ...]:
    return (
        Column("currency", "currency", "text"),
        Column("dimension", "dimension", "text"),
        Column("segment", "segment", "text"),
        Column("range", "range", "text"),
        Column("customers", "customers", "count"),
        Column("net_minor", "net", "money"),
        Column("customer_share", "customer_share", "rate"),
        Column("revenue_share", "revenue_share", "rate"),
    )


def _check(limits: Sequence[int], field: str) -> list[int]:
    out = list(limits)
    if any(isinstance(t, bool) or not isinstance(t, int) for t in out):
        raise ValidationError("thresholds must be whole numbers of minor units", field=field)
    if any(t < 0 for t in out) or out != sorted(set(out)):
        raise ValidationError("thresholds must be strictly increasing and non-negative", field=field)
    return out


def normalize_thresholds(thresholds: Thresholds) -> tuple[list[int], dict[str, list[int]]]:
    """(default thresholds, per-currency overrides); a mapping may hold a ``"*"`` default."""
    if isinstance(thresholds, Mapping):
        default = _check(thresholds.get("*", [10_000, 100_000]), "thresholds")
        per = {normalize_currency(c): _check(v, f"thresholds.{c}") for c, v in thresholds.items() if c != "*"}
        return default, per
    return _check(thresholds, "thresholds"), {}


def segment_names(limits: Sequence[int]) -> list[str]:
    if len(limits) == 2:
        return ["small", "medium", "large"]
    if len(limits) == 1:
        return ["small", "large"]
    return [f"ltv_{i}" for i in range(len(limits) + 1)]


def segment_range(limits: Sequence[int], i: int, currency: str) -> str:
    lo = format_minor(limits[i - 1], currency) if i > 0 else None
    hi = format_minor(limits[i], currency) if i < len(limits) else None
    if lo is None and hi is None:
        return "all"
    if lo is None:
        return f"< {hi}"
    if hi is None:
        return f">= {lo}"
    return f"{lo} to < {hi}"


def _bucket_case(net: Any, currency: Any, default: list[int], per: dict[str, list[int]]) -> Any:
    def for_limits(limits: list[int]) -> Any:
        if not limits:
            return literal(0)
        return case(*[(net < lim, literal(i)) for i, lim in enumerate(limits)], else_=literal(len(limits)))

    if not per:
        return for_limits(default)
    return case(*[(currency == c, for_limits(lims)) for c, lims in sorted(per.items())], else_=for_limits(default))


def segments_report(engine: Engine, q: ReportQuery, *, thresholds: Thresholds = (10_000, 100_000),
                    generated_at: datetime | None = None) -> Report:
    default, per = normalize_thresholds(thresholds)
    inv, ref, plan = invoices, refunds, plans
    tier = func.coalesce(plan.c.tier, NO_TIER)
    paid = select(
        inv.c.customer_id, inv.c.currency, tier.label("tier"), func.sum(inv.c.amount_paid_minor).label("amount"),
    ).select_from(inv.join(plan, plan.c.id == inv.c.plan_id)).where(
        inv.c.status == "paid", inv.c.paid_at < ts(q.end))
    back = select(
        inv.c.customer_id, ref.c.currency, tier.label("tier"), (-func.sum(ref.c.amount_minor)).label("amount"),
    ).select_from(ref.join(inv, inv.c.id == ref.c.invoice_id).join(plan, plan.c.id == inv.c.plan_id)).where(
        ref.c.status == "succeeded", ref.c.succeeded_at < ts(q.end))
    if q.currency:
        paid = paid.where(inv.c.currency == q.currency)
        back = back.where(ref.c.currency == q.currency)
    moves = union_all(
        paid.group_by(inv.c.customer_id, inv.c.currency, tier),
        back.group_by(inv.c.customer_id, ref.c.currency, tier),
    ).subquery("money")
    # net per (customer, currency, tier): one row per customer and tier, so counting rows
    # counts distinct customers
    cpt = (
        select(moves.c.customer_id, moves.c.currency, moves.c.tier, func.sum(moves.c.amount).label("net"))
        .group_by(moves.c.customer_id, moves.c.currency, moves.c.tier)
        .cte("cust_tier_net")
    )
    cust = (
        select(cpt.c.customer_id, cpt.c.currency, func.sum(cpt.c.net).label("net"))
        .group_by(cpt.c.customer_id, cpt.c.currency)
        .subquery("cust_net")
    )
    # one statement for both dimensions, so the invoices are aggregated once
    b = _bucket_case(cust.c.net, cust.c.currency, default, per)
    ltv_inner = select(cust.c.currency, cast(b, String).label("segment"), cust.c.net).subquery("ltv")
    ltv_stmt = select(literal("ltv").label("dimension"), ltv_inner.c.currency, ltv_inner.c.segment,
                      func.count().label("n"), func.sum(ltv_inner.c.net).label("net")).group_by(
        ltv_inner.c.currency, ltv_inner.c.segment)
    tier_stmt = select(literal("tier").label("dimension"), cpt.c.currency, cpt.c.tier.label("segment"),
                       func.count().label("n"), func.sum(cpt.c.net).label("net")).group_by(cpt.c.currency, cpt.c.tier)

    ltv: dict[str, dict[int, tuple[int, int]]] = {}
    tiers: dict[str, dict[str, tuple[int, int]]] = {}
    with engine.connect() as conn:
        tune(conn)
        for r in conn.execute(union_all(ltv_stmt, tier_stmt)):
            if r.dimension == "ltv":
                ltv.setdefault(r.currency, {})[int(r.segment)] = (int(r.n), int(r.net or 0))
            else:
                tiers.setdefault(r.currency, {})[r.segment] = (int(r.n), int(r.net or 0))

    rows: list[dict[str, Any]] = []
    for cur in sorted(set(ltv) | set(tiers)):
        buckets = ltv.get(cur, {})
        total_n = sum(n for n, _ in buckets.values())
        total_net = sum(a for _, a in buckets.values())
        limits = per.get(cur, default)
        for i, name in enumerate(segment_names(limits)):
            n, amount = buckets.get(i, (0, 0))
            rows.append({"currency": cur, "dimension": "ltv", "segment": name,
                         "range": segment_range(limits, i, cur), "customers": n, "net_minor": amount,
                         "customer_share": rate(n, total_n), "revenue_share": rate(amount, total_net)})
        for name, (n, amount) in sorted(tiers.get(cur, {}).items()):
            rows.append({"currency": cur, "dimension": "tier", "segment": name, "range": "",
                         "customers": n, "net_minor": amount, "customer_share": rate(n, total_n),
                         "revenue_share": rate(amount, total_net)})
    return Report("segments", "Customer segments", q, columns(), rows, generated_at)
