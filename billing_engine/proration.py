"""Proration arithmetic for a plan change: pure functions of (period, prices, instant).

The rule (docs/lifecycle.md, "Proration"):

- time is counted in whole seconds: the change instant is truncated to the second, and a
  period's length is ``period_end - period_start`` in seconds;
- **credit** = what was paid for the current period x unused seconds / period seconds;
- **charge** = the new plan's price x the seconds it is charged for / the seconds of the
  new plan's period that they belong to: the rest of the current period when both plans
  bill on the same interval (the period is kept), or the whole new period when the
  interval differs (the new plan's period starts at the change instant);
- each of the two is rounded ONCE, to the nearest minor unit, halves to even
  (:func:`billing_engine.money.round_half_even`); ``net = charge - credit``: positive is
  charged now, negative is refunded (or not, per the proration behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

from billing_engine.money import round_half_even
from billing_engine.periods import Interval, monthly_amount, period_bounds


class ProrationBehavior(StrEnum):
    """Stripe's names. This engine keeps no pending invoice items: a proration is always
    invoiced at once, so ``create_prorations`` and ``always_invoice`` behave the same (a
    positive net is charged now, a negative net refunded now)."""

    CREATE_PRORATIONS = "create_prorations"
    ALWAYS_INVOICE = "always_invoice"
    NONE = "none"  # no credit, no partial charge (a new interval's period is charged in full)


class ChangeTiming(StrEnum):
    NOW = "now"
    PERIOD_END = "period_end"


def second(at: datetime) -> datetime:
    return at - timedelta(microseconds=at.microsecond)


def same_schedule(old: Any, new: Any) -> bool:
    """Both plans bill on the same interval: the current period is kept."""
    return bool(old.interval == new.interval and old.interval_count == new.interval_count)


@dataclass(frozen=True, kw_only=True)
class Quote:
    """The exact amounts of an immediate plan change at ``at`` (minor units of ``currency``)."""

    at: datetime
    currency: str
    credit_minor: int  # unused part of what was paid for the current period
    charge_minor: int  # the new plan, for the seconds it is charged for
    net_minor: int  # charge - credit: > 0 charged now, < 0 owed back
    period_start: datetime  # the new plan's current period after the change
    period_end: datetime
    unused_seconds: int
    period_seconds: int
    reanchored: bool  # the interval changes: a new period starts at ``at``

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "currency": self.currency, "credit_minor": self.credit_minor,
                "charge_minor": self.charge_minor, "net_minor": self.net_minor,
                "period_start": self.period_start, "period_end": self.period_end,
                "unused_seconds": self.unused_seconds, "period_seconds": self.period_seconds,
                "reanchored": self.reanchored}


def quote(*, at: datetime, period_start: datetime, period_end: datetime, paid_minor: int,
          old: Any, new: Any, behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS) -> Quote:
    """Credit and charge for switching from ``old`` to ``new`` at ``at`` (within the period)."""
    at = second(at)
    total = int((period_end - period_start).total_seconds())
    unused = max(0, min(total, int((period_end - at).total_seconds())))
    reanchored = not same_schedule(old, new)
    if reanchored:
        start, end = period_bounds(at, Interval(new.interval), new.interval_count, 0)
    else:
        start, end = period_start, period_end
    if behavior == ProrationBehavior.NONE:
        credit = 0
        charge = int(new.amount_minor) if reanchored else 0
    else:
        credit = round_half_even(Fraction(paid_minor * unused, total)) if total > 0 else 0
        charge = int(new.amount_minor) if reanchored else (
            round_half_even(Fraction(int(new.amount_minor) * unused, total)) if total > 0 else 0)
    return Quote(at=at, currency=new.currency, credit_minor=credit, charge_minor=charge, net_minor=charge - credit,
                 period_start=start, period_end=end, unused_seconds=unused, period_seconds=total,
                 reanchored=reanchored)


def switch_on_payment(sub: Any, invoice: Any, new_plan: Any) -> dict[str, Any]:
    """What a paid proration invoice changes on its subscription: the plan (and, when the
    interval changed, a new anchor at the change instant with its first period paid)."""
    out: dict[str, Any] = {
        "plan_id": invoice.plan_id, "scheduled_plan_id": None,
        "mrr_minor": monthly_amount(int(new_plan.amount_minor), Interval(new_plan.interval), new_plan.interval_count),
    }
    if invoice.period_end != sub.current_period_end:  # re-anchored: period 0 of the new plan is this invoice
        out.update({"billing_anchor": invoice.period_start, "current_period_start": invoice.period_start,
                    "current_period_end": invoice.period_end, "next_period_index": 1,
                    "anchor_period_index": 0})  # a new schedule: period 0 starts at the anchor
    return out
