"""Payment methods: gateway tokens for cards (never a card number) plus their consent."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from billing_engine import consents, events, validation
from billing_engine.errors import NotFound, ValidationError
from billing_engine.gateway.protocol import CardDetails
from billing_engine.models import Consent, PaymentMethod, PaymentMethodStatus

_TOKEN = re.compile(r"^(pm|card|src|tok)_[A-Za-z0-9_]{1,200}$")


def validate_token(token: str) -> str:
    t = (token or "").strip()
    if validation.looks_like_pan(t):
        raise ValidationError(
            "looks like a card number; this engine never accepts card numbers, "
            "pass the gateway's payment-method token (pm_...)",
            field="token",
        )
    if not _TOKEN.match(t):
        raise ValidationError("must be a gateway payment-method token such as pm_card_visa", field="token")
    return t


def add(
    session: Session,
    *,
    customer_id: str,
    token: str,
    gateway: str,
    card: CardDetails | None,
    consent: consents.ConsentInput,
    now: datetime,
    actor: str = "admin",
) -> tuple[PaymentMethod, Consent]:
    """Store a tokenised card and the consent to charge it off-session (atomically)."""
    token = validate_token(token)
    consents.validate(consent, now=now)
    existing = session.exec(
        select(PaymentMethod).where(
            PaymentMethod.customer_id == customer_id, PaymentMethod.gateway == gateway, PaymentMethod.token == token
        )
    ).first()
    if existing is not None:
        pm = existing
        if pm.status != PaymentMethodStatus.ACTIVE:
            pm.status = PaymentMethodStatus.ACTIVE
            pm.detached_at = None
            session.add(pm)
    else:
        pm = PaymentMethod(customer_id=customer_id, gateway=gateway, token=token, created_at=now)
        if card is not None:
            pm.brand, pm.last4 = card.brand, card.last4
            pm.exp_month, pm.exp_year = card.exp_month, card.exp_year
        session.add(pm)
        session.flush()
        events.record(session, events.EventType.PAYMENT_METHOD_ADDED, at=now, actor=actor,
                      customer_id=customer_id,
                      payload={"payment_method_id": pm.id, "brand": pm.brand, "last4": pm.last4})
    c = consents.record(session, customer_id=customer_id, payment_method=pm, data=consent, now=now, actor=actor)
    return pm, c


def get(session: Session, payment_method_id: str) -> PaymentMethod:
    pm = session.get(PaymentMethod, payment_method_id)
    if pm is None:
        raise NotFound(f"no payment method {payment_method_id!r}", field="payment_method")
    return pm


def list_for_customer(session: Session, customer_id: str) -> list[PaymentMethod]:
    return list(session.exec(
        select(PaymentMethod).where(PaymentMethod.customer_id == customer_id).order_by(col(PaymentMethod.created_at))
    ))


def is_expired(pm: PaymentMethod, at: datetime) -> bool:
    if pm.exp_year is None or pm.exp_month is None:
        return False
    return (at.year, at.month) > (pm.exp_year, pm.exp_month)


def detach(session: Session, pm: PaymentMethod, *, now: datetime, actor: str = "system") -> PaymentMethod:
    if pm.status != PaymentMethodStatus.DETACHED:
        pm.status = PaymentMethodStatus.DETACHED
        pm.detached_at = now
        session.add(pm)
        events.record(session, events.EventType.PAYMENT_METHOD_DETACHED, at=now, actor=actor,
                      customer_id=pm.customer_id, payload={"payment_method_id": pm.id})
    return pm


def update_card(session: Session, pm: PaymentMethod, card: CardDetails, *, now: datetime, actor: str = "system") -> PaymentMethod:
    """Card updater (e.g. Stripe's payment_method.automatically_updated)."""
    pm.brand, pm.last4, pm.exp_month, pm.exp_year = card.brand, card.last4, card.exp_month, card.exp_year
    if pm.status == PaymentMethodStatus.EXPIRED:
        pm.status = PaymentMethodStatus.ACTIVE
    session.add(pm)
    events.record(session, events.EventType.PAYMENT_METHOD_UPDATED, at=now, actor=actor,
                  customer_id=pm.customer_id,
                  payload={"payment_method_id": pm.id, "last4": pm.last4,
                           "exp_month": pm.exp_month, "exp_year": pm.exp_year})
    return pm


def summary(pm: PaymentMethod) -> dict[str, Any]:
    """The card as shown to admins (CLI ``--json`` and the API): gateway token and brand/last4/expiry only."""
    return {"id": pm.id, "customer_id": pm.customer_id, "gateway": pm.gateway, "token": pm.token,
            "brand": pm.brand, "last4": pm.last4, "exp_month": pm.exp_month, "exp_year": pm.exp_year,
            "status": pm.status, "created_at": pm.created_at}
