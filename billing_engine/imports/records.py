"""One imported subscription, and the mapping of a source's schedule onto the engine's.

Sources (Stripe, a CSV) describe a subscription as Stripe does: a billing-cycle anchor,
the *current* period (for ``past_due``: the period whose payment failed), a trial end
and the cancel-at-period-end flag. The engine's model (``subscriptions.py``) keeps the
last *paid* period as the current one and the index of the next period to bill, counted
from the anchor. :func:`engine_schedule` is the one translation, a pure function: the
next charge date of an imported subscription equals the source's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from billing_engine.errors import ValidationError
from billing_engine.models import SubscriptionStatus
from billing_engine.periods import Interval, boundary

IMPORTABLE_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)
# "until the cut-over command runs": charging held with no date yet (see cutover.py)
HOLD = datetime.fromisoformat("2999-12-31T00:00:00+00:00")


@dataclass(frozen=True, kw_only=True)
class PlanSpec:
    code: str
    name: str
    amount_minor: int
    currency: str
    interval: str
    interval_count: int = 1
    external_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CustomerSpec:
    external_id: str
    email: str
    name: str = ""
    gateway_customer_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class CardSpec:
    external_id: str
    gateway: str
    token: str
    brand: str = "unknown"
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """The engine's columns for an imported subscription."""

    status: str
    billing_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    next_period_index: int
    trial_end: datetime | None
    next_retry_at: datetime | None
    next_charge_at: datetime  # what the source would charge next (equal by construction)


@dataclass(frozen=True, kw_only=True)
class Record:
    """One subscription to import, with its customer, card and plan (by code)."""

    external_id: str
    source: str  # "stripe" | "csv"
    customer: CustomerSpec
    card: CardSpec
    plan: PlanSpec
    status: str
    billing_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    next_retry_at: datetime | None = None  # past_due: when the failed payment is retried
    created_at: datetime  # the original creation time at the source
    charge_from: datetime | None = None
    source_ids: dict[str, Any] = field(default_factory=dict)  # shown in the consent record
    schedule: Schedule | None = None  # engine_schedule(...) of the above, when already computed


def period_index(anchor: datetime, interval: str, count: int, at: datetime) -> int | None:
    """``n`` with ``boundary(anchor, n) == at``, or None when ``at`` is not a boundary."""
    iv = Interval(interval)
    if at < anchor:
        return None
    if iv in (Interval.DAY, Interval.WEEK):
        step = timedelta(days=(7 if iv is Interval.WEEK else 1) * count)
        n, rest = divmod(at - anchor, step)
        return int(n) if rest == timedelta(0) else None
    months = (at.year - anchor.year) * 12 + at.month - anchor.month
    per = count * (12 if iv is Interval.YEAR else 1)
    guess = max(months // per, 0)
    for n in (guess, guess + 1, guess - 1):
        if n >= 0 and boundary(anchor, iv, count, n) == at:
            return n
    return None


def engine_schedule(*, status: str, billing_anchor: datetime, current_period_start: datetime,
                    current_period_end: datetime, trial_end: datetime | None, next_retry_at: datetime | None,
                    interval: str, interval_count: int) -> Schedule:
    """Translate a source's schedule; raises :class:`ValidationError` naming the column."""
    if status not in IMPORTABLE_STATUSES:
        raise ValidationError(f"must be one of {', '.join(IMPORTABLE_STATUSES)}, got {status!r}", field="status")
    if current_period_end <= current_period_start:
        raise ValidationError("must be after current_period_start", field="current_period_end")
    if status == SubscriptionStatus.TRIALING:
        if trial_end is None:
            raise ValidationError("a trialing subscription needs its trial end", field="trial_end")
        if trial_end != current_period_end:
            raise ValidationError("a trial ends at the end of the current period", field="trial_end")
    if status == SubscriptionStatus.PAST_DUE:
        # the current period is the unpaid one: the engine keeps the one before as paid
        # and retries the unpaid one (its next period) at next_retry_at
        n = period_index(billing_anchor, interval, interval_count, current_period_start)
        if n is None:
            raise ValidationError(f"is not a {interval} boundary of billing_anchor "
                                  f"{billing_anchor.isoformat()}", field="current_period_start")
        start = boundary(billing_anchor, Interval(interval), interval_count, n - 1) if n > 0 else current_period_start
        retry = next_retry_at or current_period_start
        return Schedule(status=status, billing_anchor=billing_anchor, current_period_start=start,
                        current_period_end=current_period_start, next_period_index=n, trial_end=trial_end,
                        next_retry_at=retry, next_charge_at=retry)
    n = period_index(billing_anchor, interval, interval_count, current_period_end)
    if n is None:
        raise ValidationError(f"is not a {interval} boundary of billing_anchor {billing_anchor.isoformat()} "
                              f"(every {interval_count} {interval})", field="current_period_end")
    return Schedule(status=status, billing_anchor=billing_anchor, current_period_start=current_period_start,
                    current_period_end=current_period_end, next_period_index=n, trial_end=trial_end,
                    next_retry_at=None, next_charge_at=current_period_end)


def consent_text(record: Record) -> str:
    """The consent record's provenance text (stored with its hash): where the agreement
    was collected, the source's ids and the original creation time."""
    ids = ", ".join(f"{k} {v}" for k, v in sorted(record.source_ids.items()))
    where = "Stripe Billing" if record.source == "stripe" else "the previous billing system (CSV import)"
    return (f"Imported from {where}: the customer agreed there to be charged "
            f"{record.plan.amount_minor} {record.plan.currency} (minor units) every {record.plan.interval_count} "
            f"{record.plan.interval} until they cancel. Source ids: {ids}. "
            f"Originally created {record.created_at.isoformat()}.")
