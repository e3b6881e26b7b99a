"""Edits of customers, plans and subscriptions that change no money: e-mail, name,
metadata, the default card, a plan's money-back guarantee. Each writes one event with
the fields before and after (an audit trail), in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from billing_engine import customers, events, metadata, plans, subscriptions, validation
from billing_engine.errors import Conflict, NotFound, ValidationError
from billing_engine.models import Customer, PaymentMethod, PaymentMethodStatus, Plan, Subscription

_UNSET: Any = object()


def update_customer(
    session: Session, customer: str, *, now: datetime, email: str | None = None, name: str | None = None,
    metadata_: dict[str, Any] | None = None, default_payment_method: Any = _UNSET, actor: str = "admin",
) -> Customer:
    """Change e-mail / name / metadata / default card (``default_payment_method=None`` clears it)."""
    c = customers.get(session, customer)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}

    def put(field: str, old: Any, new: Any) -> None:
        if old != new:
            before[field], after[field] = old, new

    if email is not None:
        new_email = validation.email(email)
        put("email", c.email, new_email)
        c.email = new_email
    if name is not None:
        new_name = validation.text(name, "name", max_length=200)
        put("name", c.name, new_name)
        c.name = new_name
    if metadata_ is not None:
        raw, _ = metadata.merge(c.metadata_json, metadata_)
        put("metadata", metadata.load(c.metadata_json), metadata.load(raw))
        c.metadata_json = raw
    if default_payment_method is not _UNSET:
        pm_id = default_payment_method or None
        if pm_id is not None:
            pm = session.get(PaymentMethod, pm_id)
            if pm is None:
                raise NotFound(f"no payment method {pm_id!r}", field="default_payment_method")
            if pm.customer_id != c.id:
                raise Conflict("the payment method belongs to another customer", field="default_payment_method")
            if pm.status != PaymentMethodStatus.ACTIVE:
                raise Conflict(f"the payment method is {pm.status}", field="default_payment_method")
        put("default_payment_method_id", c.default_payment_method_id, pm_id)
        c.default_payment_method_id = pm_id
    if after:
        session.add(c)
        events.record(session, events.EventType.CUSTOMER_UPDATED, at=now, actor=actor, customer_id=c.id,
                      payload={"before": before, "after": after})
    return c


def update_subscription(
    session: Session, subscription_id: str, *, now: datetime, metadata_: dict[str, Any] | None = None,
    actor: str = "admin",
) -> Subscription:
    sub = subscriptions.get(session, subscription_id)
    if metadata_ is not None:
        raw, _ = metadata.merge(sub.metadata_json, metadata_)
        if raw != sub.metadata_json:
            events.record(session, events.EventType.SUBSCRIPTION_UPDATED, at=now, actor=actor, subscription_id=sub.id,
                          customer_id=sub.customer_id,
                          payload={"before": {"metadata": metadata.load(sub.metadata_json)},
                                   "after": {"metadata": metadata.load(raw)}})
            sub.metadata_json = raw
            sub.updated_at = now
            session.add(sub)
    return sub


def update_plan(
    session: Session, plan: str, *, now: datetime, metadata_: dict[str, Any] | None = None,
    guarantee_days: Any = _UNSET, customer_can_pause: bool | None = None, actor: str = "admin",
) -> Plan:
    """Metadata, the money-back guarantee window (days after the first payment; None: none)
    and whether the customer may pause from the self-service page."""
    p = plans.get(session, plan)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if metadata_ is not None:
        raw, _ = metadata.merge(p.metadata_json, metadata_)
        if raw != p.metadata_json:
            before["metadata"], after["metadata"] = metadata.load(p.metadata_json), metadata.load(raw)
            p.metadata_json = raw
    if guarantee_days is not _UNSET:
        days = None if guarantee_days in (None, 0) else validation.int_range(guarantee_days, "guarantee_days", lo=1, hi=365)
        if days != p.guarantee_days:
            before["guarantee_days"], after["guarantee_days"] = p.guarantee_days, days
            p.guarantee_days = days
    if customer_can_pause is not None and bool(customer_can_pause) != p.customer_can_pause:
        before["customer_can_pause"], after["customer_can_pause"] = p.customer_can_pause, bool(customer_can_pause)
        p.customer_can_pause = bool(customer_can_pause)
    if after:
        session.add(p)
        events.record(session, events.EventType.PLAN_UPDATED, at=now, actor=actor,
                      payload={"plan_id": p.id, "before": before, "after": after})
    return p


def parse_guarantee(value: str | None) -> int | None:
    if value is None or value.strip().lower() in ("", "none", "0"):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError("must be a number of days (1-365) or 'none'", field="guarantee_days") from None
