"""Test data builders (plain functions; each commits nothing by itself)."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlmodel import Session

from billing_engine import customers, payment_methods, plans, subscriptions
from billing_engine.consents import ConsentInput
from billing_engine.gateway.protocol import CardDetails
from billing_engine.models import Customer, PaymentMethod, Plan, Subscription

TERMS = "You authorise us to charge this card each period until you cancel."


class Clock:
    """A settable "now" for an app or a page under test (``clock.at = ...`` moves it)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def make_plan(s: Session, now: datetime, *, code: str = "basic-monthly", amount_minor: int = 1700,
              currency: str = "USD", interval: str = "month", interval_count: int = 1,
              trial_days: int = 0, **kw: object) -> Plan:
    return plans.create(s, code=code, name=code.replace("-", " ").title(), amount_minor=amount_minor,
                        currency=currency, interval=interval, interval_count=interval_count,
                        trial_days=trial_days, now=now, **kw)  # type: ignore[arg-type]


def make_customer(s: Session, now: datetime, *, email: str = "ada@example.com", name: str = "Ada") -> Customer:
    return customers.create(s, email=email, name=name, now=now)


def consent_for(plan: Plan, now: datetime, **kw: object) -> ConsentInput:
    data: dict[str, object] = dict(
        accepted_at=now - timedelta(minutes=5), ip_address="203.0.113.7", user_agent="Mozilla/5.0 (test)",
        terms_version="2026-01", terms_text=TERMS, amount_minor=plan.amount_minor, currency=plan.currency,
        interval=plan.interval, interval_count=plan.interval_count, channel="web", plan_id=plan.id,
    )
    data.update(kw)
    return ConsentInput(**data)  # type: ignore[arg-type]


def make_card(s: Session, now: datetime, customer: Customer, plan: Plan, *, token: str = "pm_card_visa",
              gateway: str = "fake") -> PaymentMethod:
    pm, _ = payment_methods.add(
        s, customer_id=customer.id, token=token, gateway=gateway,
        card=CardDetails(token=token, brand="visa", last4="4242", exp_month=12, exp_year=2034),
        consent=consent_for(plan, now), now=now)
    return pm


def make_subscription(s: Session, now: datetime, *, plan: Plan | None = None, token: str = "pm_card_visa",
                      email: str = "ada@example.com", trial_days: int | None = None,
                      start_at: datetime | None = None) -> Subscription:
    plan = plan or make_plan(s, now)
    cust = make_customer(s, now, email=email)
    pm = make_card(s, now, cust, plan, token=token)
    return subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id,
                                now=now, start_at=start_at, trial_days=trial_days)


def remind_ahead(engine: Any, at: datetime, settings: Any = None) -> None:
    """The reminder passes ahead of a renewal at ``at`` (30 and 7 days before): a renewal is
    charged only once its reminder is the plan's lead time old (billing_engine.reminders)."""
    from billing_engine import reminders
    from billing_engine.settings import load_settings

    for days in (30, 7):
        reminders.queue(engine, now=at - timedelta(days=days), settings=settings or load_settings())


class Outbox:
    """A mail transport that keeps what it was handed (what the customer receives)."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        self.sent.append(message)

    def close(self) -> None:
        pass
