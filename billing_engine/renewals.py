"""What the run-cycle does with one subscription at ``now``: one pure decision.

The dry run and the real run both call :func:`decide` on the same snapshot, so a dry
run says exactly what the real run at the same instant will do: charge, reconcile,
end at period end, cancel as involuntary (with its reason) or skip (with its reason).
:func:`load` builds the snapshots of a whole batch in a handful of queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from billing_engine import consents, payment_methods, payments
from billing_engine.models import (
    Consent,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.periods import Interval, period_bounds

CHARGEABLE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE)


class ActionKind(StrEnum):
    CHARGE = "charge"
    RECONCILE = "reconcile"  # an earlier attempt's outcome is unknown: settle it first
    END_AT_PERIOD_END = "end_at_period_end"  # a scheduled cancellation takes effect
    CANCEL_INVOLUNTARY = "cancel_involuntary"
    SKIP = "skip"  # not charged, not canceled (e.g. no consent): an admin must act
    NOTHING = "nothing"  # not due (any more)


@dataclass(frozen=True, kw_only=True)
class Action:
    kind: ActionKind
    reason: str | None = None  # involuntary reason, or why skipped
    message: str | None = None
    period_index: int | None = None
    amount_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    sub: Subscription
    plan: Plan
    payment_method: PaymentMethod | None
    consents: tuple[Consent, ...]
    unresolved: PaymentAttempt | None
    open_invoice: Invoice | None  # the open invoice of the next period (a dunning retry)


def is_due(sub: Subscription, now: datetime) -> bool:
    if sub.status in CHARGEABLE:
        return sub.current_period_end <= now
    if sub.status == SubscriptionStatus.PAST_DUE:
        return sub.next_retry_at is not None and sub.next_retry_at <= now
    return False


def decide(snap: Snapshot, now: datetime) -> Action:
    """The one decision, in this order: reconcile, ended, scheduled end, not due,
    unusable card (involuntary), no consent (skip), charge."""
    sub, plan, pm = snap.sub, snap.plan, snap.payment_method
    if snap.unresolved is not None:
        return Action(kind=ActionKind.RECONCILE, amount_minor=snap.unresolved.amount_minor,
                      currency=snap.unresolved.currency, message=f"attempt {snap.unresolved.id} is {snap.unresolved.status}")
    if sub.status == SubscriptionStatus.CANCELED:
        return Action(kind=ActionKind.NOTHING, reason="canceled")
    if sub.cancel_at_period_end and sub.current_period_end <= now:
        return Action(kind=ActionKind.END_AT_PERIOD_END, reason=sub.cancellation_reason)
    if not is_due(sub, now):
        return Action(kind=ActionKind.NOTHING, reason="not due")
    if pm is None or pm.status == PaymentMethodStatus.DETACHED:
        return Action(kind=ActionKind.CANCEL_INVOLUNTARY, reason="hard_decline:payment_method_detached",
                      message="no usable payment method")
    if payment_methods.is_expired(pm, now) or pm.status == PaymentMethodStatus.EXPIRED:
        return Action(kind=ActionKind.CANCEL_INVOLUNTARY, reason="card_expired",
                      message=f"card ····{pm.last4} expired {pm.exp_month}/{pm.exp_year}")
    if not any(consents.covers(c, plan) for c in snap.consents):
        return Action(kind=ActionKind.SKIP, reason="no_consent", message="no recorded consent covering this plan")
    inv = snap.open_invoice
    return Action(kind=ActionKind.CHARGE, period_index=sub.next_period_index,
                  amount_minor=inv.amount_minor if inv else plan.amount_minor,
                  currency=inv.currency if inv else plan.currency)


def next_period(sub: Subscription, plan: Plan) -> tuple[datetime, datetime]:
    return period_bounds(sub.billing_anchor, Interval(plan.interval), plan.interval_count, sub.next_period_index)


def load(session: Session, subs: Sequence[Subscription], plans: dict[str, Plan] | None = None) -> list[Snapshot]:
    """Snapshots of ``subs`` (in their order) in five queries, whatever their number."""
    if not subs:
        return []
    ids = [s.id for s in subs]
    plans = dict(plans or {})
    missing = {s.plan_id for s in subs} - plans.keys()
    if missing:
        plans.update({p.id: p for p in session.exec(select(Plan).where(col(Plan.id).in_(missing)))})
    pm_ids = {s.payment_method_id for s in subs if s.payment_method_id}
    pms = {p.id: p for p in session.exec(select(PaymentMethod).where(col(PaymentMethod.id).in_(pm_ids)))} if pm_ids else {}
    by_pm: dict[str, list[Consent]] = {}
    if pm_ids:
        for c in session.exec(select(Consent).where(col(Consent.payment_method_id).in_(pm_ids),
                                                    col(Consent.revoked_at).is_(None))):
            by_pm.setdefault(c.payment_method_id, []).append(c)
    unresolved = payments.unresolved_by_subscription(session, ids)
    open_invoices = {(i.subscription_id, i.period_index): i for i in session.exec(
        select(Invoice).where(col(Invoice.subscription_id).in_(ids), Invoice.status == InvoiceStatus.OPEN))}
    return [
        Snapshot(
            sub=s, plan=plans[s.plan_id],
            payment_method=pms.get(s.payment_method_id) if s.payment_method_id else None,
            consents=tuple(by_pm.get(s.payment_method_id or "", ())),
            unresolved=unresolved.get(s.id),
            open_invoice=open_invoices.get((s.id, s.next_period_index)),
        )
        for s in subs
    ]
