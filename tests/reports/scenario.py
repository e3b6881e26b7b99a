"""A few simulated months of billing, built through the real services and the run-cycle.

Every churn path appears at least once: voluntary at period end and immediately,
dunning exhausted (payment_failed), hard decline, dispute, expired card, a trial that
converts and one canceled before paying, a card recovered by dunning, a returning
customer (reactivation), refunds, yearly / weekly / daily plans and a second currency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_engine import cancellations, refunds, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import CardDetails
from billing_engine.models import Customer, Invoice, PaymentMethod, Plan, Subscription
from billing_engine.payment_methods import update_card
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan

T0 = datetime(2025, 11, 1, 6, 0, tzinfo=UTC)
DAYS = 122  # through 2026-03-02
RANGE = (datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@dataclass
class World:
    engine: Engine
    gateway: FakeGateway
    plans: dict[str, Plan] = field(default_factory=dict)
    subs: dict[str, str] = field(default_factory=dict)  # label -> subscription id
    customers: dict[str, str] = field(default_factory=dict)  # label -> customer id

    def sub(self, s: Session, label: str) -> Subscription:
        sub = s.get(Subscription, self.subs[label])
        assert sub is not None
        return sub


def subscribe(w: World, s: Session, label: str, plan: str, now: datetime, *, token: str = "pm_card_visa",
              customer: str | None = None, trial_days: int | None = None) -> None:
    p = w.plans[plan]
    if customer is None:
        cust = make_customer(s, now, email=f"{label.lower()}@example.com", name=label)
        w.customers[label] = cust.id
    else:
        w.customers[label] = w.customers[customer]
    cust_id = w.customers[label]
    cust_obj = s.get(Customer, cust_id)
    assert cust_obj is not None
    pm = make_card(s, now, cust_obj, p, token=token)
    sub = subscriptions.create(s, customer_id=cust_id, plan_id=p.id, payment_method_id=pm.id, now=now,
                               trial_days=trial_days)
    w.subs[label] = sub.id


def build(engine: Engine, *, days: int = DAYS,
          on_day: Callable[[World, datetime], None] | None = None) -> World:
    """``on_day(world, now)`` runs after each day's run-cycle."""
    gw = FakeGateway()
    w = World(engine=engine, gateway=gw)
    settings = load_settings(dunning_schedule_days=[1, 3, 7])
    with transaction(engine) as s:
        for code, amount, cur, iv, tier in (
            ("basic", 1700, "USD", "month", "small"),
            ("pro-year", 19900, "USD", "year", "large"),
            ("weekly", 499, "USD", "week", "small"),
            ("daily", 99, "USD", "day", None),
            ("jp-monthly", 1500, "JPY", "month", "medium"),
        ):
            w.plans[code] = make_plan(s, T0, code=code, amount_minor=amount, currency=cur, interval=iv, tier=tier)

    actions: dict[int, list[Callable[[Session, datetime], None]]] = {}

    def at(day: int) -> Callable[[Callable[[Session, datetime], None]], None]:
        def deco(fn: Callable[[Session, datetime], None]) -> None:
            actions.setdefault(day, []).append(fn)
        return deco

    @at(0)
    def _start(s: Session, now: datetime) -> None:
        for i in range(1, 7):
            subscribe(w, s, f"A{i}", "basic", now)
        subscribe(w, s, "Y1", "pro-year", now)
        subscribe(w, s, "W1", "weekly", now)
        subscribe(w, s, "D1", "daily", now)
        subscribe(w, s, "J1", "jp-monthly", now)
        subscribe(w, s, "J2", "jp-monthly", now)
        subscribe(w, s, "R1", "basic", now, token="pm_fake_recover_after_2")  # recovered by dunning
        subscribe(w, s, "F1", "basic", now, token="pm_fake_decline_insufficient_funds_after_1")  # dunning exhausted
        subscribe(w, s, "H1", "basic", now, token="pm_fake_decline_stolen_card_after_2")  # hard decline
        subscribe(w, s, "F0", "basic", now, token="pm_card_chargeDeclinedInsufficientFunds")  # never pays
        subscribe(w, s, "T1", "basic", now, trial_days=14)  # trial converts
        subscribe(w, s, "T2", "basic", now, trial_days=14)  # trial canceled before paying

    @at(5)
    def _trial_cancel(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "T2"), kind="voluntary", reason="unused", at_period_end=False, now=now)

    @at(10)
    def _cancel_at_end(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "A1"), kind="voluntary", reason="too_expensive", now=now)

    @at(20)
    def _daily_leaves(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "D1"), kind="voluntary", reason="too_complex", now=now)

    @at(40)
    def _cancel_now(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "A2"), kind="voluntary", reason="switched_service",
                             at_period_end=False, now=now)

    @at(45)
    def _dispute(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "A3"), kind="involuntary", reason="dispute", at_period_end=False,
                             now=now, actor="system:dispute")

    @at(50)
    def _card_expires(s: Session, now: datetime) -> None:
        pm = s.get(PaymentMethod, w.sub(s, "A4").payment_method_id)
        assert pm is not None
        update_card(s, pm, CardDetails(token=pm.token, brand="visa", last4="4242", exp_month=12, exp_year=2025),
                    now=now)

    @at(61)
    def _comes_back(s: Session, now: datetime) -> None:
        subscribe(w, s, "A1b", "basic", now, token="pm_card_mastercard", customer="A1")

    @at(70)
    def _newcomers(s: Session, now: datetime) -> None:
        for i in range(1, 4):
            subscribe(w, s, f"N{i}", "basic", now)
        subscribe(w, s, "J3", "jp-monthly", now)

    @at(100)
    def _weekly_leaves(s: Session, now: datetime) -> None:
        cancellations.cancel(s, w.sub(s, "W1"), kind="voluntary", reason="other", now=now)

    refund_plan = {20: ("A5", None), 75: ("J1", 500), 95: ("Y1", 4900)}
    for day in range(days):
        now = T0 + timedelta(days=day)
        with transaction(engine) as s:
            for fn in actions.get(day, []):
                fn(s, now)
        if day in refund_plan:
            label, amount = refund_plan[day]
            with transaction(engine) as s:
                inv = s.exec(_first_paid(w.subs[label])).first()
                assert inv is not None, label
                inv_id = inv.id
            refunds.create(engine, gw, invoice_id=inv_id, amount_minor=amount, reason="requested_by_customer",
                           now=now)
        summary = run_cycle(engine, gw, now=now, settings=settings)
        assert not summary.errors or all("not charged" in e for e in summary.errors), summary.errors
        if on_day is not None:
            on_day(w, now)
    return w


def _first_paid(sub_id: str):  # type: ignore[no-untyped-def]
    from sqlmodel import col, select

    return (select(Invoice).where(Invoice.subscription_id == sub_id, Invoice.status == "paid")
            .order_by(col(Invoice.period_index)))
