"""Pause and resume collection.

* ``pause(now)``: status ``paused`` at once. The customer keeps what they paid for (the
  current period is not refunded); nothing is charged and no reminder is sent while paused.
* ``pause(at_period_end)``: stays active to the end of the paid period; the run-cycle then
  pauses it instead of renewing it (the dry run shows ``pause``).
* ``resumes_at``: the run-cycle resumes it by itself at that instant (an auto-resume).
* a subscription may start paused (``subscriptions.create(..., paused=True)``).
* e-mails (outbox rows queued with the change): a scheduled pause is confirmed at once
  (``subscription_pause_scheduled``: from, until, the charge skipped, the first charge after
  it by the resume rule, the account link that undoes it), a scheduled pause taken back too
  (``subscription_pause_canceled``); ``subscription_paused`` / ``subscription_resumed`` when
  it takes effect / resumes. One per scheduling: their dedupe key is the change's event.

Paused is not churn: the subscription is live, it can be canceled (a cancellation at period
end takes effect at the end of the paid period), and reports count it apart.

THE resume rule (:func:`resume_changes`), at resume instant R:

* R before the end of the paid (or trial) period: nothing was skipped, the schedule is
  unchanged (the next charge is at the period end, as before the pause);
* otherwise the schedule restarts at R: ``billing_anchor = R`` (period ``next_period_index``
  starts at R; ``anchor_period_index`` records that), the subscription is due at once and
  the run-cycle charges a full period [R, R + interval) at the price in force at R. Periods
  that fell inside the pause are never billed. An auto-resume uses R = ``resumes_at``
  (not the run's time), so a late run bills the same periods as a punctual one.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import events, notifications, payments, pricing
from billing_engine.db import locks_rows, transaction
from billing_engine.errors import BillingError, Conflict, InvalidTransition, ValidationError
from billing_engine.models import Plan, Subscription, SubscriptionPause, SubscriptionStatus
from billing_engine.periods import ensure_utc

PAUSABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.INCOMPLETE)


CUSTOMER = "customer"  # the actor of the self-service page


def refusal(session: Session, sub: Subscription, *, actor: str = "admin") -> BillingError | None:
    """Why ``sub`` cannot be paused now by ``actor`` (None: it can): THE rules of :func:`pause`,
    also asked by the self-service page before it offers the button. The customer
    (``actor="customer"``) may pause only a subscription whose plan has
    ``customer_can_pause``; an admin always may."""
    if actor == CUSTOMER:
        plan = session.get(Plan, sub.plan_id)
        if plan is None or not plan.customer_can_pause:
            return Conflict("this plan cannot be paused from the account page", field="subscription")
    if sub.status == SubscriptionStatus.PAUSED or sub.pause_at_period_end:
        return InvalidTransition("the subscription is already paused (or its pause is scheduled)", field="subscription")
    if sub.status not in PAUSABLE:
        why = "settle its open invoice first" if sub.status == SubscriptionStatus.PAST_DUE else "it has ended"
        return InvalidTransition(f"a {sub.status} subscription cannot be paused: {why}", field="subscription")
    if sub.cancel_at_period_end:
        return InvalidTransition("the subscription is canceled at period end; undo the cancellation first",
                                 field="subscription")
    if session.exec(payments.unresolved_query(subscription_ids=[sub.id])).first() is not None:
        return Conflict("a charge of this subscription is in flight; try again after the run-cycle",
                        field="subscription")
    return None


def can_resume(sub: Subscription) -> bool:
    """Paused, or a pause scheduled for the period end (then :func:`resume` takes it back)."""
    return sub.status == SubscriptionStatus.PAUSED or (
        sub.pause_at_period_end and sub.status != SubscriptionStatus.CANCELED)


def pause(
    session: Session, sub: Subscription, *, now: datetime, at_period_end: bool = False,
    resumes_at: datetime | None = None, actor: str = "admin",
) -> Subscription:
    if (err := refusal(session, sub, actor=actor)) is not None:
        raise err
    starts = sub.current_period_end if at_period_end and sub.current_period_end > now else now
    if resumes_at is not None:
        resumes_at = ensure_utc(resumes_at, "resumes_at")
        if resumes_at <= starts:
            raise ValidationError(f"must be after the pause starts ({starts.isoformat()})", field="resumes_at",
                                  starts=starts)
    sub.resumes_at = resumes_at
    sub.updated_at = now
    if starts > now:
        sub.pause_at_period_end = True
        session.add(sub)
        ev = events.record(session, events.EventType.SUBSCRIPTION_PAUSE_SCHEDULED, at=now, actor=actor,
                           subscription_id=sub.id, customer_id=sub.customer_id,
                           payload={"pauses_at": starts, "resumes_at": resumes_at})
        _confirm_scheduled(session, sub, starts=starts, event_id=ev.id, now=now)
        return sub
    take_effect(session, sub, at=now, now=now, actor=actor)
    return sub


def _confirm_scheduled(session: Session, sub: Subscription, *, starts: datetime, event_id: int | None,
                       now: datetime) -> None:
    """The customer's confirmation of a scheduled pause, queued with the change: from when to
    when, the charge that is skipped (the renewal due when it starts) and the first charge after
    an auto-resume (its date and amount by THE resume rule). One per scheduling: the dedupe
    key is the scheduling's event."""
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    payload: dict[str, Any] = {"pauses_at": starts, "resumes_at": sub.resumes_at, "currency": plan.currency,
                               "skipped_amount_minor": pricing.quote(session, sub, plan, sub.next_period_index).net_minor}
    if sub.resumes_at is not None:
        charge_at, quote = charge_after_resume(session, sub, plan, sub.resumes_at)
        payload.update(next_charge_at=charge_at, amount_minor=quote.net_minor)
    notifications.enqueue(session, notifications.Kind.SUBSCRIPTION_PAUSE_SCHEDULED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"pause_scheduled:{sub.id}:{event_id}", at=now,
                          event_id=event_id, payload=payload)


def take_effect(session: Session, sub: Any, *, at: datetime, now: datetime, actor: str = "system:cycle") -> None:
    """The pause starts (at once, or at the end of the period for a scheduled one)."""
    previous = sub.status
    sub.status = SubscriptionStatus.PAUSED
    sub.paused_at = at
    sub.pause_at_period_end = False
    sub.updated_at = now
    session.add(sub)
    session.add(SubscriptionPause(subscription_id=sub.id, plan_id=sub.plan_id, paused_at=at,
                                  resumes_at=sub.resumes_at, actor=actor, created_at=now))
    events.record(session, events.EventType.SUBSCRIPTION_PAUSED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id,
                  payload={"previous_status": previous, "paused_at": at, "resumes_at": sub.resumes_at})
    payload: dict[str, Any] = {"paused_at": at.isoformat(),
                               "resumes_at": sub.resumes_at.isoformat() if sub.resumes_at else None}
    plan = session.get(Plan, sub.plan_id)
    if sub.resumes_at is not None and plan is not None:  # "the next charge is then ...": what it will be
        _at, q = charge_after_resume(session, sub, plan, sub.resumes_at)
        payload.update(amount_minor=q.net_minor, currency=plan.currency)
    notifications.enqueue(session, notifications.Kind.SUBSCRIPTION_PAUSED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"paused:{sub.id}:{at.isoformat()}", at=now,
                          payload=payload)


def charge_after_resume(session: Session, sub: Any, plan: Plan, at: datetime) -> tuple[datetime, pricing.Quote]:
    """When the first period after a resume at ``at`` is charged, and at what price: the
    price in force then (a price change announced meanwhile) less a coupon still applying
    -- not the plan's list price. Worked out on a copy of ``sub`` (a model or a plain row)
    with :func:`resume_changes` applied; ``sub`` itself is not touched."""
    values = {c.name: getattr(sub, c.name) for c in Subscription.__table__.columns}  # type: ignore[attr-defined]
    resumed = SimpleNamespace(**{**values, **resume_changes(sub, at)})
    return resumed.current_period_end, pricing.quote(session, resumed, plan, int(resumed.next_period_index))


def resume_changes(sub: Any, at: datetime) -> dict[str, Any]:
    """THE resume rule (module docstring): the subscription's new values at resume instant ``at``."""
    out: dict[str, Any] = {"paused_at": None, "resumes_at": None, "pause_at_period_end": False}
    if at < sub.current_period_end:
        in_trial = sub.trial_end is not None and sub.activated_at is None and sub.current_period_end == sub.trial_end
        out["status"] = SubscriptionStatus.TRIALING if in_trial else (
            SubscriptionStatus.ACTIVE if sub.activated_at is not None else SubscriptionStatus.INCOMPLETE)
        return out
    out.update({
        "status": SubscriptionStatus.ACTIVE if sub.activated_at is not None else SubscriptionStatus.INCOMPLETE,
        "billing_anchor": at, "anchor_period_index": sub.next_period_index,
        "current_period_start": at, "current_period_end": at,
    })
    return out


def resume(session: Session, sub: Subscription, *, now: datetime, at: datetime | None = None,
           actor: str = "admin") -> Subscription:
    """Resume now (or cancel a scheduled pause). ``at``: the resume instant (auto-resume)."""
    at = at or now
    if sub.pause_at_period_end and sub.status != SubscriptionStatus.PAUSED:
        sub.pause_at_period_end = False
        sub.resumes_at = None
        sub.updated_at = now
        session.add(sub)
        ev = events.record(session, events.EventType.SUBSCRIPTION_RESUMED, at=now, actor=actor,
                           subscription_id=sub.id, customer_id=sub.customer_id,
                           payload={"scheduled_pause_canceled": True})
        plan = session.get(Plan, sub.plan_id)
        assert plan is not None
        notifications.enqueue(  # "your pause is canceled; the next charge is as before"
            session, notifications.Kind.SUBSCRIPTION_PAUSE_CANCELED, customer_id=sub.customer_id,
            subscription_id=sub.id, dedupe_key=f"pause_canceled:{sub.id}:{ev.id}", at=now, event_id=ev.id,
            payload={"charge_at": sub.current_period_end, "currency": plan.currency,
                     "amount_minor": pricing.quote(session, sub, plan, sub.next_period_index).net_minor})
        return sub
    if sub.status != SubscriptionStatus.PAUSED:
        raise InvalidTransition("the subscription is not paused", field="subscription")
    changes = resume_changes(sub, at)
    for k, v in changes.items():
        setattr(sub, k, v)
    sub.updated_at = now
    session.add(sub)
    open_pause = session.exec(select(SubscriptionPause).where(
        SubscriptionPause.subscription_id == sub.id, col(SubscriptionPause.resumed_at).is_(None))).first()
    if open_pause is not None:
        open_pause.resumed_at = at
        session.add(open_pause)
    events.record(session, events.EventType.SUBSCRIPTION_RESUMED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id,
                  payload={"resumed_at": at, "status": sub.status, "next_charge_at": sub.current_period_end,
                           "reanchored": "billing_anchor" in changes})
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    q = pricing.quote(session, sub, plan, sub.next_period_index)
    notifications.enqueue(session, notifications.Kind.SUBSCRIPTION_RESUMED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"resumed:{sub.id}:{at.isoformat()}", at=now,
                          payload={"charge_at": sub.current_period_end, "amount_minor": q.net_minor,
                                   "currency": plan.currency})
    return sub


def due_query(now: datetime) -> Any:
    """Paused subscriptions with work at ``now``: an auto-resume due, or a cancellation
    scheduled for the end of a period that has ended."""
    return select(Subscription).where(
        Subscription.status == SubscriptionStatus.PAUSED,
        ((col(Subscription.resumes_at) <= now) & ~col(Subscription.cancel_at_period_end))
        | (col(Subscription.cancel_at_period_end) & (col(Subscription.current_period_end) <= now)),
    ).order_by(col(Subscription.id))


def run_due(engine: Engine, now: datetime, *, batch: int = 500) -> tuple[int, int]:
    """Before a run-cycle claims: resume the paused subscriptions whose resume date has
    come (they are then due and charged by the same run) and end the paused ones whose
    scheduled cancellation took effect. Returns (resumed, ended)."""
    from billing_engine import cancellations

    resumed = ended = 0
    while True:
        with transaction(engine) as s:
            q = due_query(now).limit(batch)
            if locks_rows(s):
                q = q.with_for_update(skip_locked=True)
            subs = list(s.exec(q))
            for sub in subs:
                if sub.cancel_at_period_end:
                    cancellations.end_at_period_end(s, sub, now=now)
                    ended += 1
                else:
                    assert sub.resumes_at is not None
                    resume(s, sub, now=now, at=sub.resumes_at, actor="system:auto_resume")
                    resumed += 1
        if len(subs) < batch:
            return resumed, ended


def planned(session: Session, now: datetime) -> list[Subscription]:
    """The dry run's view of :func:`run_due` (changes nothing)."""
    return list(session.exec(due_query(now)))
