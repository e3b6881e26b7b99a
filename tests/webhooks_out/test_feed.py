"""The public event types a merchant receives, from a dunning story, a trial, an expiring
card and a refund (the feed and the webhooks carry the same JSON)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import event_feed, payment_methods, refunds, reminders, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import CardDetails
from billing_engine.models import Customer, Invoice, Plan
from billing_engine.settings import load_settings
from tests.factories import make_card, make_plan, make_subscription

SETTINGS = load_settings()


def _feed(engine: Engine, **kw: Any) -> list[dict[str, Any]]:
    with Session(engine) as s:
        return event_feed.present_many(s, event_feed.list_events(s, limit=1000, **kw))


def test_a_failed_renewal_then_a_new_card_reads_as_past_due_then_recovered(engine: Engine, now: Any) -> None:
    with transaction(engine) as s:
        sub = make_subscription(s, now, token="pm_card_chargeDeclinedInsufficientFunds")
        sub_id, cust_id, plan_id = sub.id, sub.customer_id, sub.plan_id
    run_cycle(engine, FakeGateway(), now=now, settings=SETTINGS)
    with transaction(engine) as s:
        cust, plan = s.get(Customer, cust_id), s.get(Plan, plan_id)
        assert cust is not None and plan is not None
        good = make_card(s, now, cust, plan, token="pm_card_visa")
        subscriptions.change_payment_method(s, subscriptions.get(s, sub_id), good.id, now=now + timedelta(hours=1))
    run_cycle(engine, FakeGateway(), now=now + timedelta(hours=2), settings=SETTINGS)
    feed = _feed(engine, subscription_id=sub_id)
    types = [e["type"] for e in feed]
    assert types == ["subscription.created", "invoice.payment_failed", "subscription.past_due",
                     "payment_method.updated", "invoice.paid", "subscription.recovered"]
    failed, past_due = feed[1]["data"], feed[2]["data"]
    assert (failed["amount_minor"], failed["currency"], failed["decline_code"], failed["decline_kind"]) == (
        1700, "USD", "insufficient_funds", "soft")
    assert past_due["status"] == "past_due" and past_due["next_retry_at"]
    assert feed[3]["data"]["payment_method_id"] == good.id
    assert feed[5]["data"]["previous_status"] == "past_due" and feed[5]["data"]["amount_minor"] == 1700
    assert _feed(engine, types=event_feed.parse_types("invoice.*"), subscription_id=sub_id)[0]["type"] == "invoice.payment_failed"


def test_trial_ending_expiring_card_and_refund_are_public_events(engine: Engine, now: Any) -> None:
    with transaction(engine) as s:
        plan = make_plan(s, now, trial_days=14)
        trial = make_subscription(s, now, plan=plan, trial_days=14)
        trial_id = trial.id
    reminders.queue(engine, now=now + timedelta(days=10), settings=SETTINGS)
    [ending] = _feed(engine, types=["subscription.trial_ending"])
    assert ending["data"]["subscription_id"] == trial_id and ending["data"]["trial_end"].startswith("2026-01-29")
    # the card expires before the first charge
    with transaction(engine) as s:
        sub = subscriptions.get(s, trial_id)
        pm = payment_methods.get(s, sub.payment_method_id or "")
        payment_methods.update_card(s, pm, CardDetails(token=pm.token, brand="visa", last4="1111", exp_month=12,
                                                       exp_year=2025), now=now + timedelta(days=10))
        sub.reminded_period_index = None
        s.add(sub)
    reminders.queue(engine, now=now + timedelta(days=11), settings=SETTINGS)
    [expiring] = _feed(engine, types=["payment_method.expiring"])
    assert (expiring["data"]["last4"], expiring["data"]["exp_month"], expiring["data"]["exp_year"]) == ("1111", 12, 2025)
    assert [e["data"]["last4"] for e in _feed(engine, types=["payment_method.updated"])] == ["1111"]
    # a refund of a paid invoice
    with transaction(engine) as s:
        paid = make_subscription(s, now, plan=make_plan(s, now, code="monthly"), email="bob@example.com")
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=SETTINGS)
    with Session(engine) as s:
        inv = s.exec(select(Invoice).where(Invoice.subscription_id == paid.id)).one()
    refunds.create(engine, gw, invoice_id=inv.id, amount_minor=500, reason="requested_by_customer",
                   now=now + timedelta(days=1))
    [refund] = _feed(engine, types=["refund.created"])
    assert (refund["data"]["amount_minor"], refund["data"]["currency"], refund["data"]["invoice_id"]) == (
        500, "USD", inv.id)
