"""Subscription transitions: create, cancel, undo, consent, card rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from billing_engine import cancellations, customers, payment_methods, plans, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import Conflict, ConsentRequired, InvalidTransition, ValidationError
from billing_engine.models import Consent, Event, PaymentMethod
from tests.factories import consent_for, make_card, make_customer, make_plan, make_subscription


def test_subscription_without_consent_covering_the_price_is_refused(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        cheap = make_plan(s, now, code="cheap", amount_minor=500)
        dear = make_plan(s, now, code="dear", amount_minor=5000)
        cust = make_customer(s, now)
        pm = make_card(s, now, cust, cheap)  # consented to 5.00 a month
        cust_id, pm_id, dear_id = cust.id, pm.id, dear.id
    with pytest.raises(ConsentRequired), transaction(engine) as s:
        subscriptions.create(s, customer_id=cust_id, plan_id=dear_id, payment_method_id=pm_id, now=now)


def test_card_number_is_rejected_and_nothing_is_stored(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        cust_id = cust.id
    for pan in ("4242424242424242", "4242 4242 4242 4242", "pm_4242424242424242"):
        with pytest.raises(ValidationError, match="card number") as exc, transaction(engine) as s:
            payment_methods.add(s, customer_id=cust_id, token=pan, gateway="fake", card=None,
                                consent=consent_for(plan, now), now=now)
        assert exc.value.field == "token"
    with Session(engine) as s:
        assert s.exec(select(PaymentMethod)).all() == []
        assert s.exec(select(Consent)).all() == []


def test_consent_records_who_when_where_and_the_exact_terms(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        make_card(s, now, cust, plan)
    with Session(engine) as s:
        c = s.exec(select(Consent)).one()
    import hashlib

    from tests.factories import TERMS

    assert c.ip_address == "203.0.113.7" and c.user_agent.startswith("Mozilla")
    assert c.terms_sha256 == hashlib.sha256(TERMS.encode()).hexdigest() and c.terms_version == "2026-01"
    assert (c.amount_minor, c.currency, c.interval, c.interval_count) == (1700, "USD", "month", 1)


def test_bad_consent_fields_are_named(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
    cases = {"consent.ip_address": {"ip_address": "not-an-ip"},
             "consent.accepted_at": {"accepted_at": now + timedelta(days=1)},
             "consent.terms_text": {"terms_text": None}}
    for field, override in cases.items():
        with pytest.raises(ValidationError) as exc, transaction(engine) as s:
            payment_methods.add(s, customer_id=cust.id, token="pm_card_visa", gateway="fake", card=None,
                                consent=consent_for(plan, now, **override), now=now)
        assert exc.value.field == field


def test_cancel_twice_is_a_conflict_after_it_ended(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        sub = make_subscription(s, now)
        cancellations.cancel(s, sub, now=now, at_period_end=False)
    with pytest.raises(InvalidTransition), transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub.id), now=now)


def test_repeating_a_scheduled_cancel_changes_nothing(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings())
    with transaction(engine) as s:
        first = cancellations.cancel(s, subscriptions.get(s, sub_id), reason="unused", now=now + timedelta(days=1))
    with transaction(engine) as s:
        again = cancellations.cancel(s, subscriptions.get(s, sub_id), now=now + timedelta(days=2))
    assert first.changed and not again.changed
    with Session(engine) as s:
        n = len(s.exec(select(Event).where(Event.type == "subscription.cancel_scheduled")).all())
        sub = subscriptions.get(s, sub_id)
    assert n == 1 and sub.cancellation_reason == "unused" and sub.canceled_at == now + timedelta(days=1)


def test_undo_before_period_end_restores_the_renewal(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings())
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), now=now + timedelta(days=1))
        cancellations.undo(s, subscriptions.get(s, sub_id), now=now + timedelta(days=2))
    with Session(engine) as s:
        sub = subscriptions.get(s, sub_id)
        assert (sub.cancel_at_period_end, sub.cancellation_kind, sub.status) == (False, None, "active")
        assert subscriptions.next_charge(s, sub) is not None


def test_voluntary_reason_must_be_a_known_code(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        sub = make_subscription(s, now)
    with pytest.raises(ValidationError) as exc, transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub.id), reason="payment_failed", now=now)
    assert exc.value.field == "reason"


def test_plan_with_subscribers_cannot_be_repriced(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        make_subscription(s, now, plan=plan)
    with pytest.raises(Conflict), transaction(engine) as s:
        plans.update(s, plan.code, amount_minor=9900, now=now)
    with transaction(engine) as s:
        plans.update(s, plan.code, name="Renamed", active=False, now=now)
        assert plans.get(s, plan.code).amount_minor == 1700


def test_duplicate_plan_code_and_customer_ref_are_conflicts(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        make_plan(s, now, code="x")
        customers.create(s, email="a@example.com", external_ref="r1", now=now)
    with pytest.raises(Conflict) as exc, transaction(engine) as s:
        make_plan(s, now, code="x")
    assert exc.value.field == "code"
    with pytest.raises(Conflict), transaction(engine) as s:
        customers.create(s, email="b@example.com", external_ref="r1", now=now)
