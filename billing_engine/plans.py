"""Plans: what is sold, at what price, how often. A plan with subscribers is never
re-priced in place: create a new plan (new code) instead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from billing_engine import events, metadata, validation
from billing_engine.errors import Conflict, NotFound, ValidationError
from billing_engine.models import Plan, Subscription
from billing_engine.money import normalize_currency
from billing_engine.periods import validate_interval

# Receipts per charge (docs/customer-communications.md): one e-mail per charge (it is the
# next charge's reminder when it goes out inside the reminder window), none, or one
# digest a month for short intervals.
RECEIPTS = ("each", "off", "monthly")


def create(
    session: Session,
    *,
    code: str,
    name: str,
    amount_minor: int,
    currency: str,
    interval: str,
    interval_count: int = 1,
    trial_days: int = 0,
    cancel_immediately: bool = False,
    reminder_days: int | None = None,
    tier: str | None = None,
    receipts: str = "each",
    now: datetime,
    actor: str = "admin",
) -> Plan:
    code = validation.code(code, "code")
    name = validation.text(name, "name", max_length=200, required=True)
    validation.int_range(amount_minor, "amount_minor", lo=0, hi=10**12)
    currency = normalize_currency(currency)
    iv, count = validate_interval(interval, interval_count)
    validation.int_range(trial_days, "trial_days", lo=0, hi=730)
    if reminder_days is not None:
        validation.int_range(reminder_days, "reminder_days", lo=0, hi=60)
    if tier is not None:
        tier = validation.text(tier, "tier", max_length=30) or None
    if receipts not in RECEIPTS:
        raise ValidationError(f"must be one of {', '.join(RECEIPTS)}", field="receipts")
    if session.exec(select(Plan).where(Plan.code == code)).first() is not None:
        raise Conflict(f"a plan with code {code!r} already exists", field="code")
    plan = Plan(
        code=code,
        name=name,
        amount_minor=amount_minor,
        currency=currency,
        interval=iv.value,
        interval_count=count,
        trial_days=trial_days,
        cancel_immediately=cancel_immediately,
        reminder_days=reminder_days,
        tier=tier,
        receipts=receipts,
        created_at=now,
    )
    session.add(plan)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"a plan with code {code!r} already exists", field="code") from None
    events.record(session, events.EventType.PLAN_CREATED, at=now, actor=actor,
                  payload={"plan_id": plan.id, "code": code, "amount_minor": amount_minor,
                           "currency": currency, "interval": iv.value, "interval_count": count})
    return plan


def get(session: Session, plan_id_or_code: str) -> Plan:
    plan = session.get(Plan, plan_id_or_code)
    if plan is None:
        plan = session.exec(select(Plan).where(Plan.code == plan_id_or_code)).first()
    if plan is None:
        raise NotFound(f"no plan {plan_id_or_code!r}", field="plan")
    return plan


def list_plans(session: Session, *, active: bool | None = None, limit: int | None = None,
               after: str | None = None) -> list[Plan]:
    """Plans by code; ``after`` (a code) and ``limit`` page through them."""
    q = select(Plan).order_by(col(Plan.code))
    if active is not None:
        q = q.where(Plan.active == active)
    if after:
        q = q.where(col(Plan.code) > after)
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q))


def subscriber_counts(session: Session, plan_ids: list[str]) -> dict[str, int]:
    """Subscriptions per plan, for a whole list of plans in ONE query."""
    if not plan_ids:
        return {}
    rows = session.exec(select(Subscription.plan_id, func.count()).where(col(Subscription.plan_id).in_(plan_ids))
                        .group_by(Subscription.plan_id)).all()
    return {str(pid): int(n) for pid, n in rows}


def subscriber_count(session: Session, plan_id: str) -> int:
    return int(session.exec(select(func.count()).select_from(Subscription).where(Subscription.plan_id == plan_id)).one())


def update(
    session: Session,
    plan_id_or_code: str,
    *,
    now: datetime,
    name: str | None = None,
    active: bool | None = None,
    amount_minor: int | None = None,
    currency: str | None = None,
    interval: str | None = None,
    interval_count: int | None = None,
    actor: str = "admin",
) -> Plan:
    """Rename / (de)activate any plan; price and interval only while it has no subscribers."""
    plan = get(session, plan_id_or_code)
    priced = any(v is not None for v in (amount_minor, currency, interval, interval_count))
    if priced and subscriber_count(session, plan.id):
        raise Conflict(
            "this plan has subscribers; its price and interval cannot change in place. Create a new plan "
            "instead, or change the price with notice (billing plan reprice, POST /v1/plans/{plan}/reprice)",
            field="amount_minor" if amount_minor is not None else "interval",
        )
    if name is not None:
        plan.name = validation.text(name, "name", max_length=200, required=True)
    if active is not None:
        plan.active = bool(active)
    if amount_minor is not None:
        plan.amount_minor = validation.int_range(amount_minor, "amount_minor", lo=0, hi=10**12)
    if currency is not None:
        plan.currency = normalize_currency(currency)
    if interval is not None or interval_count is not None:
        iv, count = validate_interval(interval or plan.interval, interval_count or plan.interval_count)
        plan.interval, plan.interval_count = iv.value, count
    session.add(plan)
    events.record(session, events.EventType.PLAN_UPDATED, at=now, actor=actor,
                  payload={"plan_id": plan.id, "name": plan.name, "active": plan.active})
    return plan



def summary(p: Plan) -> dict[str, Any]:
    """The plan as shown to admins (CLI ``--json`` and the API); each surface adds its display amount."""
    return {
        "id": p.id, "code": p.code, "name": p.name, "amount_minor": p.amount_minor, "currency": p.currency,
        "interval": p.interval, "interval_count": p.interval_count, "trial_days": p.trial_days,
        "active": p.active, "cancel_immediately": p.cancel_immediately, "reminder_days": p.reminder_days,
        "receipts": p.receipts,
        "tier": p.tier, "created_at": p.created_at,
        "metadata": metadata.load(p.metadata_json), "guarantee_days": p.guarantee_days,
        "customer_can_pause": p.customer_can_pause,
    }
