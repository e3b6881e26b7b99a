"""Reminders: a notice before every renewal, before a trial ends, and before a card
expires — each queued once per period (``reminded_period_index``, ``reminded_at``).

The rule (issue #16): a renewal is charged only after a reminder for that period went
out at least the plan's lead (:func:`reminder_lead`, never less than 24 hours) before.
:func:`renewals.decide` checks it (``wait reminder_pending``); this pass sends the
reminders, including the overdue ones a waiting charge needs. An e-mail that states
the next charge and goes out inside the reminder window (:func:`counts_as_reminder`:
a receipt, the sign-up confirmation) is that period's reminder, so a weekly customer
gets one e-mail per charge rather than two.

The pass reads, per plan, only subscriptions whose next charge falls within the
plan's reminder lead (or is overdue) and that were not yet reminded for that period
(an indexed range on ``(status, current_period_end)``), so a daily run stays cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, and_, col, or_, select

from billing_engine import events, notifications, pricing
from billing_engine.db import among, locks_rows, transaction
from billing_engine.models import PaymentMethod, Plan, Subscription, SubscriptionStatus
from billing_engine.periods import Interval, boundary, period_bounds
from billing_engine.settings import Settings, get_settings


def queue(engine: Engine, *, now: datetime, settings: Settings, batch: int = 500) -> int:
    """Queue the renewal / trial-end reminders and card-expiry notices due at ``now``.

    One query per status (and batch), whatever the number of plans: plans are grouped by
    their reminder lead, and a subscription is read when its next charge falls inside its
    own plan's lead (``plan_id IN group AND current_period_end <= now + lead``, OR-ed over
    the few distinct leads, under the index's range bound of the longest lead)."""
    queued = 0
    with Session(engine) as s:
        plans = {p.id: p for p in s.exec(select(Plan))}
    for status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING):
        trial = status == SubscriptionStatus.TRIALING
        lead_of = {pid: reminder_lead(plan, trial=trial, settings=settings) for pid, plan in plans.items()}
        by_lead: dict[timedelta, list[str]] = {}
        for pid, lead in lead_of.items():
            by_lead.setdefault(lead, []).append(pid)
        if not by_lead:
            continue
        inside_lead = or_(*(and_(among(col(Subscription.plan_id), ids), col(Subscription.current_period_end) <= now + lead)
                            for lead, ids in sorted(by_lead.items())))
        base = (
            select(Subscription)
            .where(Subscription.status == status)
            .where(col(Subscription.current_period_end) <= now + max(by_lead))
            .where(inside_lead)
            .where(col(Subscription.cancel_at_period_end).is_(False))
            # an import before its cut-over: the previous biller charges (and reminds)
            .where(or_(col(Subscription.charge_from).is_(None),
                       col(Subscription.charge_from) <= col(Subscription.current_period_end)))
            .where(col(Subscription.pause_at_period_end).is_(False))  # no charge: no reminder
            .where(or_(col(Subscription.reminded_period_index).is_(None),
                       col(Subscription.reminded_at).is_(None),
                       col(Subscription.reminded_period_index) < col(Subscription.next_period_index)))
            .order_by(col(Subscription.id))
            .limit(batch)
        )
        after: str | None = None
        while True:
            with transaction(engine) as s:
                # after the previous batch: rows another worker holds or reminded are not read again
                q = base if after is None else base.where(col(Subscription.id) > after)
                if locks_rows(s):  # several workers: rows locked in id order (no deadlock), re-checked
                    q = q.with_for_update()
                subs = list(s.exec(q))
                for sub in subs:
                    queued += _remind(s, sub, plans[sub.plan_id], now=now, lead=lead_of[sub.plan_id])
            if len(subs) < batch:
                break
            after = subs[-1].id
    return queued


def _remind(s: Session, sub: Subscription, plan: Plan, *, now: datetime, lead: timedelta) -> int:
    trial = sub.status == SubscriptionStatus.TRIALING
    kind = notifications.Kind.TRIAL_ENDING if trial else notifications.Kind.RENEWAL_REMINDER
    # Overdue (a catch-up after missed runs): one reminder covers every period that
    # will be due when the charge may go, so the catch-up charges them together.
    last = sub.next_period_index
    if not trial:  # the schedule of pricing.bounds: re-anchored by a resume (anchor_period_index)
        while pricing.period_start(sub, plan, last + 1) <= now + lead:
            last += 1
    sub.reminded_period_index = last
    sub.reminded_at = now
    s.add(sub)
    amount = pricing.quote(s, sub, plan, sub.next_period_index).net_minor  # what the renewal will charge
    n = notifications.enqueue(
        s, kind, customer_id=sub.customer_id, subscription_id=sub.id,
        dedupe_key=f"reminder:{sub.id}:{sub.next_period_index}", at=now,
        payload={"charge_at": max(sub.current_period_end, now + lead), "charges": last - sub.next_period_index + 1,
                 "amount_minor": amount, "period_index": sub.next_period_index,
                 "through_period_index": last,
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


MIN_LEAD = timedelta(hours=24)
COUNTS_WITHIN = timedelta(days=8)


def reminder_lead(plan: Plan, *, trial: bool, settings: Settings | None) -> timedelta:
    """How long before the charge its reminder goes out: at least that long before,
    the charge waits otherwise.

    Per plan (``reminder_days``) or the default (``BILLING_REMINDER_DAYS_BEFORE``); at
    most half a period (a weekly plan is reminded 3.5 days ahead), never less than 24
    hours (a daily plan: the receipt of one charge is the reminder of the next). Every
    plan is reminded: ``reminder_days = 0`` means the 24-hour minimum (yearly plans and
    trial ends: the default lead)."""
    if settings is None:
        settings = get_settings()
    days = plan.reminder_days if plan.reminder_days is not None else settings.reminder_days_before
    if days <= 0 and (plan.interval == "year" or trial):  # never just the minimum for these
        days = settings.reminder_days_before
    lead = timedelta(days=max(days, 1))
    if trial:
        period = timedelta(days=plan.trial_days) if plan.trial_days > 0 else lead * 2
    else:
        start = datetime(2001, 1, 1, tzinfo=UTC)  # a non-leap reference for the shortest period
        period = boundary(start, Interval(plan.interval), plan.interval_count, 1) - start
    return max(min(lead, period / 2), MIN_LEAD)


def counts_as_reminder(sent_at: datetime, charge_at: datetime, lead: timedelta) -> bool:
    """Does an e-mail stating the charge at ``charge_at``, sent at ``sent_at``, count as
    its reminder? Yes when it goes out at least ``lead`` and at most ``max(lead, 8 days)``
    before (a receipt a month ahead is no reminder: the monthly plan gets its own)."""
    gap = charge_at - sent_at
    return lead <= gap <= max(lead, COUNTS_WITHIN)


def reminded(sub: Any, lead: timedelta, now: datetime) -> bool:
    """Was the period ``sub.next_period_index`` reminded at least ``lead`` before ``now``?"""
    return (sub.reminded_period_index is not None and sub.reminded_period_index >= sub.next_period_index
            and sub.reminded_at is not None and sub.reminded_at + lead <= now)
