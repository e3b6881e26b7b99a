"""Reminders: a notice before every renewal, before a trial ends, and before a card
expires — each queued once per period (``reminded_period_index``).

The pass reads, per plan, only subscriptions whose next charge falls within the
plan's reminder lead and that were not yet reminded for that period (an indexed
range on ``(status, current_period_end)``), so a daily run stays cheap at any size.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from billing_engine import events, notifications, pricing
from billing_engine.db import transaction
from billing_engine.models import PaymentMethod, Plan, Subscription, SubscriptionStatus
from billing_engine.periods import Interval, boundary, period_bounds
from billing_engine.settings import Settings


def queue(engine: Engine, *, now: datetime, settings: Settings, batch: int = 500) -> int:
    """Queue the renewal / trial-end reminders and card-expiry notices due at ``now``."""
    queued = 0
    with Session(engine) as s:
        all_plans = list(s.exec(select(Plan)))
    for plan in all_plans:
        for status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING):
            lead = reminder_lead(plan, trial=status == SubscriptionStatus.TRIALING, settings=settings)
            if lead is None:
                continue
            while True:
                with transaction(engine) as s:
                    subs = list(s.exec(
                        select(Subscription)
                        .where(Subscription.plan_id == plan.id, Subscription.status == status)
                        .where(col(Subscription.current_period_end) > now)
                        .where(col(Subscription.current_period_end) <= now + lead)
                        .where(col(Subscription.cancel_at_period_end).is_(False))
                        # an import before its cut-over: the previous biller charges (and reminds)
                        .where(or_(col(Subscription.charge_from).is_(None),
                                   col(Subscription.charge_from) <= col(Subscription.current_period_end)))
                        .where(col(Subscription.pause_at_period_end).is_(False))  # no charge: no reminder
                        .where(or_(col(Subscription.reminded_period_index).is_(None),
                                   col(Subscription.reminded_period_index) < col(Subscription.next_period_index)))
                        .limit(batch)
                    ))
                    for sub in subs:
                        queued += _remind(s, sub, plan, now=now)
                if len(subs) < batch:
                    break
    return queued


def _remind(s: Session, sub: Subscription, plan: Plan, *, now: datetime) -> int:
    trial = sub.status == SubscriptionStatus.TRIALING
    kind = notifications.Kind.TRIAL_ENDING if trial else notifications.Kind.RENEWAL_REMINDER
    sub.reminded_period_index = sub.next_period_index
    s.add(sub)
    amount = pricing.quote(s, sub, plan, sub.next_period_index).net_minor  # what the renewal will charge
    n = notifications.enqueue(
        s, kind, customer_id=sub.customer_id, subscription_id=sub.id,
        dedupe_key=f"reminder:{sub.id}:{sub.next_period_index}", at=now,
        payload={"charge_at": sub.current_period_end, "amount_minor": amount,
                 "currency": plan.currency, "plan_name": plan.name, "trial": trial},
    )
    queued = int(n is not None)
    if trial and n is not None:
        events.record(s, events.EventType.SUBSCRIPTION_TRIAL_ENDING, at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id,
                      payload={"trial_end": sub.current_period_end, "amount_minor": plan.amount_minor,
                               "currency": plan.currency})
    pm = s.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is not None and pm.exp_year and pm.exp_month:
        first_invalid_day, _ = period_bounds(datetime(pm.exp_year, pm.exp_month, 1, tzinfo=UTC), Interval.MONTH, 1, 1)
        if first_invalid_day <= sub.current_period_end:  # the card is no longer valid at the next charge
            n = notifications.enqueue(
                s, notifications.Kind.CARD_EXPIRING, customer_id=sub.customer_id, subscription_id=sub.id,
                dedupe_key=f"card_expiring:{pm.id}:{pm.exp_year}-{pm.exp_month}", at=now,
                payload={"payment_method_id": pm.id, "brand": pm.brand, "last4": pm.last4,
                         "exp_month": pm.exp_month, "exp_year": pm.exp_year, "charge_at": sub.current_period_end},
            )
            queued += int(n is not None)
            if n is not None:
                events.record(s, events.EventType.PAYMENT_METHOD_EXPIRING, at=now, subscription_id=sub.id,
                              customer_id=sub.customer_id,
                              payload={"payment_method_id": pm.id, "brand": pm.brand, "last4": pm.last4,
                                       "exp_month": pm.exp_month, "exp_year": pm.exp_year,
                                       "next_charge_at": sub.current_period_end})
    return queued


def reminder_lead(plan: Plan, *, trial: bool, settings: Settings) -> timedelta | None:
    """How long before the charge the reminder goes out (None: no reminder).

    Per plan (``reminder_days``) or the default; never off for yearly plans and trial
    ends; at most half a period, so a weekly plan is reminded 3.5 days ahead and a
    daily plan 12 hours ahead."""
    days = plan.reminder_days if plan.reminder_days is not None else settings.reminder_days_before
    if days <= 0:
        if not (plan.interval == "year" or trial):
            return None
        days = max(settings.reminder_days_before, 1)
    lead = timedelta(days=days)
    if trial:
        period = timedelta(days=plan.trial_days) if plan.trial_days > 0 else lead * 2
    else:
        start = datetime(2001, 1, 1, tzinfo=UTC)  # a non-leap reference for the shortest period
        period = boundary(start, Interval(plan.interval), plan.interval_count, 1) - start
    return min(lead, period / 2)
