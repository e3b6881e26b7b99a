"""What the run-cycle does with one subscription at ``now``: one pure decision.

The dry run and the real run both call :func:`decide` on the same snapshot, so a dry
run says exactly what the real run at the same instant will do: charge, reconcile,
end at period end, cancel as involuntary (with its reason), wait for the period's
reminder (``wait reminder_pending``: the run sends it, the charge follows once it is
the plan's reminder lead old) or skip (with its reason).
:func:`load` builds the snapshots of a whole batch in a handful of queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from billing_engine import consents, coupons, payment_methods, payments, pricing, reminders
from billing_engine.db import among
from billing_engine.models import (
    Consent,
    Invoice,
    InvoiceStatus,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    SubscriptionStatus,
)
from billing_engine.settings import Settings, get_settings

CHARGEABLE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE)
# a snapshot's consents: the terms they cover (consents.covers), not their evidence
CONSENT_TERMS = tuple(Consent.__table__.c[k] for k in (  # type: ignore[attr-defined]
    "id", "customer_id", "payment_method_id", "plan_id", "accepted_at", "amount_minor", "currency", "interval",
    "interval_count", "revoked_at"))
CUT_OVER = "cut_over"  # an imported subscription the previous biller still charges (charge_from)


class ActionKind(StrEnum):
    CHARGE = "charge"
    RECONCILE = "reconcile"  # an earlier attempt's outcome is unknown: settle it first
    END_AT_PERIOD_END = "end_at_period_end"  # a scheduled cancellation takes effect
    PAUSE = "pause"  # a pause scheduled for period end takes effect: no charge
    CANCEL_INVOLUNTARY = "cancel_involuntary"
    WAIT = "wait"  # the period's reminder is not (long enough) out yet: the charge waits
    SKIP = "skip"  # not charged, not canceled (e.g. no consent): an admin must act
    NOTHING = "nothing"  # not due (any more)


@dataclass(frozen=True, kw_only=True)
class Action:
    kind: ActionKind
    reason: str | None = None  # involuntary reason, or why skipped
    message: str | None = None
    period_index: int | None = None
    amount_minor: int | None = None  # what is charged (net of a discount)
    currency: str | None = None
    gross_minor: int | None = None  # the price in force for the period
    discount_minor: int | None = None
    coupon: str | None = None


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What :func:`decide` reads. Rows (or ORM objects) with the tables' column names."""

    sub: Any  # subscriptions row
    plan: Plan
    payment_method: Any | None  # payment_methods row
    consents: tuple[Any, ...]  # unrevoked consents rows of that card
    unresolved: Any | None  # the oldest pending/unknown payment_attempts row
    open_invoice: Any | None  # the open invoice of the next period (a dunning retry)
    price_changes: tuple[Any, ...] = ()  # the plan's price changes, oldest first (pricing.in_force)
    redemption: Any | None = None  # the coupon redemption still discounting it (coupons.active_for)
    reminder_lead: timedelta = reminders.MIN_LEAD  # how long before the charge its reminder must go out


def quote(snap: Snapshot) -> pricing.Quote:
    """What the next period of the snapshot's subscription is billed (price in force, discount)."""
    sub, plan = snap.sub, snap.plan
    if not snap.price_changes:  # the common case: the plan's price, no period arithmetic
        gross = int(plan.amount_minor)
    else:
        gross = pricing.in_force(plan, snap.price_changes, subscribed_at=sub.created_at,
                                 period_start=next_period(sub, plan)[0])
    return coupons.apply(gross, snap.redemption, plan) if snap.redemption is not None \
        else pricing.Quote(gross_minor=gross)


def is_due(sub: Any, now: datetime) -> bool:
    if sub.status in CHARGEABLE:
        return bool(sub.current_period_end <= now)
    if sub.status == SubscriptionStatus.PAST_DUE:
        return sub.next_retry_at is not None and bool(sub.next_retry_at <= now)
    return False


def needs_reminder(snap: Snapshot) -> bool:
    """A renewal or a trial's first charge waits for its reminder; the first charge at
    sign-up (``incomplete``), a retry of a period already attempted, and the first charge
    of a schedule restarted by a resume (the customer's own request, or the date the
    pause e-mail named with its amount; docs/lifecycle-pricing.md) do not."""
    sub = snap.sub
    restarted = (getattr(sub, "anchor_period_index", 0) == sub.next_period_index > 0
                 and sub.billing_anchor == sub.current_period_end)
    return sub.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING) and snap.open_invoice is None \
        and not restarted


def charge_ready_at(snap: Snapshot, now: datetime) -> datetime | None:
    """When the period's reminder is old enough for the charge (None: not sent yet)."""
    sub = snap.sub
    if sub.reminded_at is None or sub.reminded_period_index is None or sub.reminded_period_index < sub.next_period_index:
        return None
    return sub.reminded_at + snap.reminder_lead  # type: ignore[no-any-return]


def decide(snap: Snapshot, now: datetime) -> Action:
    """The one decision, in this order: reconcile, ended, scheduled end, paused / scheduled
    pause, not due, before the cut-over of an import (skip), unusable card (involuntary),
    no consent (skip), reminder not out long enough (wait), charge."""
    sub, plan, pm = snap.sub, snap.plan, snap.payment_method
    if snap.unresolved is not None:
        return Action(kind=ActionKind.RECONCILE, amount_minor=snap.unresolved.amount_minor,
                      currency=snap.unresolved.currency, message=f"attempt {snap.unresolved.id} is {snap.unresolved.status}")
    if sub.status == SubscriptionStatus.CANCELED:
        return Action(kind=ActionKind.NOTHING, reason="canceled")
    if sub.cancel_at_period_end and sub.current_period_end <= now:
        return Action(kind=ActionKind.END_AT_PERIOD_END, reason=sub.cancellation_reason)
    if sub.status == SubscriptionStatus.PAUSED:
        return Action(kind=ActionKind.NOTHING, reason="paused")
    if sub.pause_at_period_end and sub.current_period_end <= now:
        return Action(kind=ActionKind.PAUSE, reason="scheduled_pause", amount_minor=0, currency=plan.currency,
                      message=f"paused until {sub.resumes_at.isoformat() if sub.resumes_at else 'resumed'}")
    if not is_due(sub, now):
        return Action(kind=ActionKind.NOTHING, reason="not due")
    if sub.charge_from is not None and now < sub.charge_from:
        return Action(kind=ActionKind.SKIP, reason=CUT_OVER,
                      message=f"imported: the previous biller charges it until {sub.charge_from.isoformat()}")
    if pm is None or pm.status == PaymentMethodStatus.DETACHED:
        return Action(kind=ActionKind.CANCEL_INVOLUNTARY, reason="hard_decline:payment_method_detached",
                      message="no usable payment method")
    if payment_methods.is_expired(pm, now) or pm.status == PaymentMethodStatus.EXPIRED:
        return Action(kind=ActionKind.CANCEL_INVOLUNTARY, reason="card_expired",
                      message=f"card ····{pm.last4} expired {pm.exp_month}/{pm.exp_year}")
    inv = snap.open_invoice
    q = pricing.Quote(gross_minor=inv.amount_minor + inv.discount_minor, discount_minor=inv.discount_minor) \
        if inv else quote(snap)
    if not any(consents.covers(c, plan, amount_minor=q.gross_minor) for c in snap.consents):
        return Action(kind=ActionKind.SKIP, reason="no_consent", message="no recorded consent covering this plan")
    if needs_reminder(snap) and not reminders.reminded(sub, snap.reminder_lead, now):
        ready = charge_ready_at(snap, now)
        message = (f"reminder sent {_iso(sub.reminded_at)}: charged from {_iso(ready)}" if ready is not None else
                   f"no reminder for this period yet: the run sends it now, the charge waits until "
                   f"{_iso(now + snap.reminder_lead)}")
        return Action(kind=ActionKind.WAIT, reason="reminder_pending", message=message,
                      period_index=sub.next_period_index, amount_minor=q.net_minor,
                      currency=inv.currency if inv else plan.currency)
    return Action(kind=ActionKind.CHARGE, period_index=sub.next_period_index,
                  amount_minor=q.net_minor, currency=inv.currency if inv else plan.currency,
                  gross_minor=q.gross_minor, discount_minor=q.discount_minor, coupon=q.coupon_code)


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%MZ")


def next_period(sub: Any, plan: Plan) -> tuple[datetime, datetime]:
    return pricing.bounds(sub, plan, sub.next_period_index)


def rows(session: Session, stmt: Any) -> list[Any]:
    """Core rows (attribute access by column name) instead of ORM objects: the batch
    paths read thousands of rows, and building identity-mapped objects would dominate."""
    return list(session.connection().execute(stmt).all())


def load(session: Session, subs: Sequence[Any], plans: dict[str, Plan] | None = None,
         settings: Settings | None = None) -> list[Snapshot]:
    """Snapshots of ``subs`` (ORM objects or rows, in their order) in a handful of
    queries, whatever their number. The snapshot holds rows, read-only. The period's
    reminder (``reminded_period_index`` / ``reminded_at``) is on the subscription row
    itself: no query of its own."""
    if not subs:
        return []
    ids = [s.id for s in subs]
    plans = plans if plans is not None else {}
    missing = {s.plan_id for s in subs} - plans.keys()
    if missing:
        plans.update({p.id: p for p in session.exec(select(Plan).where(col(Plan.id).in_(missing)))})
    pm_ids = {s.payment_method_id for s in subs if s.payment_method_id}
    pm_t, c_t, i_t = PaymentMethod.__table__, Consent.__table__, Invoice.__table__  # type: ignore[attr-defined]
    pms = {p.id: p for p in rows(session, pm_t.select().where(among(pm_t.c.id, pm_ids)))} if pm_ids else {}
    by_pm: dict[str, list[Any]] = {}
    if pm_ids:
        # the terms a consent covers, not its evidence (terms text, IP, user agent): see consents.covers
        for c in rows(session, select(*CONSENT_TERMS).where(among(c_t.c.payment_method_id, pm_ids),
                                                              c_t.c.revoked_at.is_(None))):
            by_pm.setdefault(c.payment_method_id, []).append(c)
    unresolved: dict[str, Any] = {}
    for a in rows(session, payments.unresolved_query(subscription_ids=ids)):
        unresolved.setdefault(a.subscription_id, a)
    open_invoices = {(i.subscription_id, i.period_index): i for i in rows(
        session, i_t.select().where(among(i_t.c.subscription_id, ids), i_t.c.status == InvoiceStatus.OPEN))}
    # what the next period costs: the plans' price changes and the coupons still applying,
    # one query each for the whole batch
    price_changes = pricing.changes_for(session, {s.plan_id for s in subs})
    redemptions = coupons.active_for(session, ids)
    settings = settings or get_settings()
    leads: dict[tuple[str, bool], timedelta] = {}
    for s in subs:
        key = (s.plan_id, s.status == SubscriptionStatus.TRIALING)
        if key not in leads:
            leads[key] = reminders.reminder_lead(plans[s.plan_id], trial=key[1], settings=settings)
    return [
        Snapshot(
            sub=s, plan=plans[s.plan_id],
            payment_method=pms.get(s.payment_method_id) if s.payment_method_id else None,
            consents=tuple(by_pm.get(s.payment_method_id or "", ())),
            unresolved=unresolved.get(s.id),
            open_invoice=open_invoices.get((s.id, s.next_period_index)),
            price_changes=tuple(price_changes.get(s.plan_id, ())),
            redemption=redemptions.get(s.id),
            reminder_lead=leads[(s.plan_id, s.status == SubscriptionStatus.TRIALING)],
        )
        for s in subs
    ]
