"""Stripe events for the webhook tests: real event / object shapes (Stripe's official
fixtures in tests/gateway/stripe_fixtures), signed the way Stripe signs them, plus
builders for the billing rows they refer to."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

from billing_engine import invoices, payments, subscriptions
from billing_engine.db import transaction
from billing_engine.models import Invoice, PaymentAttempt, PaymentMethod, Plan, Subscription
from tests.factories import make_card, make_customer, make_plan
from tests.gateway.stripe_sim import fixture

SECRET = "whsec_test"
_ids = itertools.count(1)


def sign(body: str, *, secret: str = SECRET, at: float | None = None) -> str:
    """A ``Stripe-Signature`` header: ``t=<ts>,v1=HMAC-SHA256(secret, f"{t}.{body}")``."""
    ts = int(at if at is not None else time.time())
    mac = hmac.new(secret.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def event(type_: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    e = fixture("event")
    e.update(id=event_id or f"evt_test{next(_ids):06d}{int(time.time() * 1000) % 100000:05d}", type=type_,
             data={"object": obj}, api_version="2026-10-28.endive")
    return e


def body_of(e: dict[str, Any]) -> str:
    return json.dumps(e, separators=(",", ":"))


def intent(attempt: PaymentAttempt, *, status: str = "succeeded", intent_id: str | None = None,
           decline_code: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    pi = fixture("payment_intent")
    pi.update(
        id=intent_id or attempt.gateway_charge_id or f"pi_test_{attempt.id}",
        amount=attempt.amount_minor, amount_received=attempt.amount_minor if status == "succeeded" else 0,
        currency=attempt.currency.lower(), status=status, next_action=None, processing=None, canceled_at=None,
        metadata=metadata if metadata is not None else {
            "invoice_id": attempt.invoice_id, "subscription_id": attempt.subscription_id,
            "attempt_id": attempt.id, "idempotency_key": attempt.idempotency_key},
        last_payment_error=None,
    )
    if decline_code:
        pi["last_payment_error"] = {"type": "card_error", "code": "card_declined", "decline_code": decline_code,
                                    "message": "Your card was declined."}
    return pi


def charge(intent_id: str, *, amount: int, amount_refunded: int, currency: str = "usd",
           refunds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ch = fixture("charge")
    ch.update(id=f"ch_for_{intent_id}", payment_intent=intent_id, amount=amount, amount_captured=amount,
              amount_refunded=amount_refunded, captured=True, currency=currency,
              refunded=amount_refunded >= amount)
    if refunds is None:
        ch.pop("refunds", None)  # not included in events since API version 2022-11-15
    else:
        ch["refunds"] = {"object": "list", "data": refunds, "has_more": False, "url": f"/v1/charges/{ch['id']}/refunds"}
    return ch


def refund_obj(refund_id: str, intent_id: str, amount: int, *, status: str = "succeeded",
               metadata: dict[str, str] | None = None) -> dict[str, Any]:
    r = fixture("refund")
    r.update(id=refund_id, payment_intent=intent_id, amount=amount, status=status, metadata=metadata or {},
             currency="usd", charge=f"ch_for_{intent_id}")
    return r


def dispute(dispute_id: str, intent_id: str | None, *, status: str, amount: int = 1700) -> dict[str, Any]:
    d = fixture("dispute")
    d.update(id=dispute_id, payment_intent=intent_id, status=status, amount=amount, reason="fraudulent",
             charge=f"ch_for_{intent_id}")
    return d


def payment_method(token: str, *, last4: str, exp_month: int, exp_year: int, brand: str = "visa") -> dict[str, Any]:
    pm = fixture("payment_method")
    pm.update(id=token)
    pm["card"].update(brand=brand, last4=last4, exp_month=exp_month, exp_year=exp_year)
    return pm


# --------------------------------------------------------------------------- billing rows


@dataclass(frozen=True)
class Billed:
    subscription_id: str
    customer_id: str
    payment_method_id: str
    token: str


def subscribed(engine: Engine, now: datetime, *, token: str = "pm_card_visa", email: str = "ada@example.com",
               plan_code: str = "basic-monthly") -> Billed:
    """A customer on a 17.00 USD monthly plan with a consented Stripe card (first charge due now)."""
    with transaction(engine) as s:
        plan = s.exec(select(Plan).where(Plan.code == plan_code)).first() or make_plan(s, now, code=plan_code)
        cust = make_customer(s, now, email=email)
        pm = make_card(s, now, cust, plan, token=token, gateway="stripe")
        sub = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=now)
        return Billed(sub.id, cust.id, pm.id, token)


def pending_attempt(engine: Engine, subscription_id: str, now: datetime) -> PaymentAttempt:
    """The state right after the run-cycle committed an attempt, before Stripe answered."""
    with transaction(engine) as s:
        sub = s.get(Subscription, subscription_id)
        assert sub is not None
        plan = s.get(Plan, sub.plan_id)
        pm = s.get(PaymentMethod, sub.payment_method_id)
        assert plan is not None and pm is not None
        inv = invoices.for_period(s, sub, plan, sub.next_period_index, now=now)
        return payments.start_attempt(s, sub, inv, pm, now=now)


def get(engine: Engine, model: type[SQLModel], id_: str) -> Any:
    with transaction(engine) as s:
        return s.get(model, id_)


def paid_attempt(engine: Engine, invoice_id: str) -> PaymentAttempt:
    with transaction(engine) as s:
        a = s.exec(select(PaymentAttempt).where(PaymentAttempt.invoice_id == invoice_id,
                                                PaymentAttempt.status == "succeeded")).one()
        return a


def only_invoice(engine: Engine, subscription_id: str) -> Invoice:
    with transaction(engine) as s:
        return s.exec(select(Invoice).where(Invoice.subscription_id == subscription_id)).one()


def counts(engine: Engine) -> dict[str, int]:
    """Row count of every table: 'nothing changed' means these are equal."""
    import billing_engine.models  # noqa: F401

    with transaction(engine) as s:
        return {t.name: int(s.exec(select(func.count()).select_from(t)).one())  # type: ignore[call-overload]
                for t in SQLModel.metadata.sorted_tables}
