"""Off-session charge consent (DESIGN invariant 6): no consent, no charge.

A consent records who agreed, when, from where (IP / user agent), the exact terms
(hash + version, and the text when given), the amount, currency and interval agreed,
and the channel. It is never deleted; revoking only stamps ``revoked_at``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from billing_engine import events, validation
from billing_engine.errors import ConsentRequired, ValidationError
from billing_engine.models import Consent, PaymentMethod, Plan
from billing_engine.money import normalize_currency
from billing_engine.periods import ensure_utc, validate_interval

CHANNELS = ("web", "email", "phone", "api", "cli", "import", "in_person")


@dataclass(frozen=True, kw_only=True)
class ConsentInput:
    accepted_at: datetime
    ip_address: str
    user_agent: str
    terms_version: str
    amount_minor: int
    currency: str
    interval: str
    interval_count: int = 1
    terms_text: str | None = None
    terms_sha256: str | None = None
    channel: str = "web"
    plan_id: str | None = None
    gateway_setup_id: str | None = None


def terms_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate(data: ConsentInput, *, now: datetime) -> ConsentInput:
    accepted_at = ensure_utc(data.accepted_at, "consent.accepted_at")
    if accepted_at > now:
        raise ValidationError("must not be in the future", field="consent.accepted_at")
    try:
        ipaddress.ip_address((data.ip_address or "").strip())
    except ValueError:
        raise ValidationError(f"not an IP address: {data.ip_address!r}", field="consent.ip_address") from None
    validation.text(data.user_agent, "consent.user_agent", max_length=1000, required=True)
    validation.text(data.terms_version, "consent.terms_version", max_length=50, required=True)
    if data.channel not in CHANNELS:
        raise ValidationError(f"must be one of {', '.join(CHANNELS)}", field="consent.channel")
    if data.terms_text is None and not data.terms_sha256:
        raise ValidationError("give the exact terms text shown (or its SHA-256)", field="consent.terms_text")
    if data.terms_text is not None:
        validation.text(data.terms_text, "consent.terms_text", max_length=100_000, required=True)
        if data.terms_sha256 and data.terms_sha256.lower() != terms_hash(data.terms_text):
            raise ValidationError("does not match the SHA-256 of terms_text", field="consent.terms_sha256")
    elif data.terms_sha256 and (len(data.terms_sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in data.terms_sha256)):
        raise ValidationError("must be 64 hex characters", field="consent.terms_sha256")
    validation.int_range(data.amount_minor, "consent.amount_minor", lo=1, hi=10**12)
    normalize_currency(data.currency)
    validate_interval(data.interval, data.interval_count)
    return data


def record(
    session: Session, *, customer_id: str, payment_method: PaymentMethod, data: ConsentInput,
    now: datetime, actor: str = "admin",
) -> Consent:
    validate(data, now=now)
    iv, count = validate_interval(data.interval, data.interval_count)
    c = Consent(
        customer_id=customer_id,
        payment_method_id=payment_method.id,
        plan_id=data.plan_id,
        accepted_at=ensure_utc(data.accepted_at),
        ip_address=data.ip_address.strip(),
        user_agent=data.user_agent.strip(),
        channel=data.channel,
        terms_version=data.terms_version.strip(),
        terms_sha256=(terms_hash(data.terms_text) if data.terms_text is not None else (data.terms_sha256 or "").lower()),
        terms_text=data.terms_text,
        amount_minor=data.amount_minor,
        currency=normalize_currency(data.currency),
        interval=iv.value,
        interval_count=count,
        gateway_setup_id=data.gateway_setup_id,
        created_at=now,
    )
    session.add(c)
    session.flush()
    events.record(session, events.EventType.CONSENT_RECORDED, at=now, actor=actor, customer_id=customer_id,
                  payload={"consent_id": c.id, "payment_method_id": payment_method.id,
                           "terms_version": c.terms_version, "terms_sha256": c.terms_sha256,
                           "amount_minor": c.amount_minor, "currency": c.currency,
                           "interval": c.interval, "interval_count": c.interval_count})
    return c


def covers(c: Consent, plan: Plan, *, amount_minor: int | None = None) -> bool:
    """Does this (unrevoked) consent cover the plan's terms: currency, interval, at most the
    amount (``amount_minor``: the price in force for the subscription, default the plan's)?"""
    amount = plan.amount_minor if amount_minor is None else amount_minor
    return (
        c.revoked_at is None
        and c.currency == plan.currency
        and c.interval == plan.interval
        and c.interval_count == plan.interval_count
        and amount <= c.amount_minor
    )


def covering(session: Session, payment_method_id: str, plan: Plan) -> Consent | None:
    """The newest unrevoked consent on this card that covers the plan's terms."""
    rows = session.exec(
        select(Consent)
        .where(Consent.payment_method_id == payment_method_id, col(Consent.revoked_at).is_(None))
        .order_by(col(Consent.accepted_at).desc())
    )
    return next((c for c in rows if covers(c, plan)), None)


def require(session: Session, payment_method_id: str | None, plan: Plan) -> Consent:
    if payment_method_id is None:
        raise ConsentRequired("the subscription has no payment method", field="payment_method")
    c = covering(session, payment_method_id, plan)
    if c is None:
        raise ConsentRequired(
            f"no recorded consent on payment method {payment_method_id} covering "
            f"{plan.amount_minor} {plan.currency} every {plan.interval_count} {plan.interval}",
            field="payment_method",
        )
    return c
