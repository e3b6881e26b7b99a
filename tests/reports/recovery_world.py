"""Two months of failed renewals, each recovered (or not) a different way: the automatic
retry, the customer's new card, an admin's card switch, the card updater webhook; lost to
dunning, to a hard decline, to a voluntary cancel during dunning; one still in dunning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from billing_engine import cancellations, payment_methods, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import CardDetails
from billing_engine.models import Customer, PaymentMethod, Plan
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
RANGE = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


def fails(code: str) -> str:
    """A card that pays once, then declines with ``code`` (the fake counts charges per token,
    so each subscription gets its own code)."""
    return f"pm_fake_decline_{code}_after_1"


def build(engine: Engine) -> dict[str, str]:
    gw = FakeGateway()
    settings = load_settings(dunning_schedule_days=[1, 3, 7])
    subs: dict[str, str] = {}
    with transaction(engine) as s:
        plan_id = make_plan(s, T0, code="basic", amount_minor=1700).id

    def subscribe(label: str, token: str, now: datetime) -> None:
        with transaction(engine) as s:
            plan = s.get(Plan, plan_id)
            assert plan is not None
            cust = make_customer(s, now, email=f"{label.lower()}@example.com", name=label)
            pm = make_card(s, now, cust, plan, token=token)
            subs[label] = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id,
                                               now=now).id

    def new_card(label: str, now: datetime, actor: str) -> None:
        with transaction(engine) as s:
            sub = subscriptions.get(s, subs[label])
            plan, cust = s.get(Plan, plan_id), s.get(Customer, sub.customer_id)
            assert plan is not None and cust is not None
            pm = make_card(s, now, cust, plan, token="pm_card_visa")
            subscriptions.change_payment_method(s, sub, pm.id, now=now, actor=actor)

    for label, token in (("AR1", "pm_fake_recover_after_1"), ("U1", "pm_fake_recover_after_2"), ("C1", fails("insufficient_funds")),
                         ("AD1", fails("do_not_honor")), ("L1", fails("generic_decline")),
                         ("V1", fails("try_again_later")),
                         ("H1", "pm_fake_decline_stolen_card_after_1")):
        subscribe(label, token, T0)
    day = T0
    while day < RANGE[1]:
        if day == T0 + timedelta(days=2):  # the card updater refreshes U1's card between two retries
            with transaction(engine) as s:
                pm = s.get(PaymentMethod, subscriptions.get(s, subs["U1"]).payment_method_id)
                assert pm is not None
                payment_methods.update_card(s, pm, CardDetails(token=pm.token, brand="visa", last4="0077",
                                                               exp_month=1, exp_year=2031),
                                            now=day, actor="stripe:webhook")
        if day == datetime(2026, 1, 27, 8, tzinfo=UTC):
            subscribe("D1", fails("processing_error"), day)  # fails on Feb 27: still in dunning when the range ends
        if day == datetime(2026, 2, 6, 8, tzinfo=UTC):
            new_card("C1", day, "customer")
            with transaction(engine) as s:
                cancellations.cancel(s, subscriptions.get(s, subs["V1"]), kind="voluntary", reason="other",
                                     at_period_end=False, now=day)
        if day == datetime(2026, 2, 7, 8, tzinfo=UTC):
            new_card("AD1", day, "admin:cli:ops")
        run_cycle(engine, gw, now=day, settings=settings)
        day += timedelta(days=1)
    return subs
