"""Card update with Stripe, through the real SDK over the scripted Stripe: a Checkout
Session in setup mode (Stripe hosts the card form), then the signed
``checkout.session.completed`` webhook stores the card with the consent given on our
page and retries the past-due subscription at once, on the same invoice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from billing_engine import links, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway import StripeGateway
from billing_engine.models import (
    CardUpdate,
    Consent,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import Settings, load_settings
from tests.e2e_stripe.conftest import NO_WAIT_RETRY
from tests.factories import Clock, make_card, make_customer, make_plan
from tests.gateway.stripe_sim import StripeSim, fixture
from tests.gateway.test_webhooks import sign

BASE = "https://billing.example"
SECRET = "whsec_self_service"


@pytest.fixture
def sim() -> StripeSim:
    return StripeSim()


@pytest.fixture
def gateway(sim: StripeSim) -> StripeGateway:
    from billing_engine.gateway import TokenBucket

    return StripeGateway("sk_test_selfservice", http_client=sim, retry=NO_WAIT_RETRY,
                         rate_limiter=TokenBucket(1_000_000, burst=1_000_000), sleep=lambda _s: None)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings(database_url=db_url, gateway="stripe", stripe_api_key="sk_test_selfservice",
                         stripe_webhook_secret=SECRET, secret_key="stripe-self-" + "x" * 30, public_base_url=BASE,
                         company_name="Gold Club", env="test")


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def client(engine: Engine, settings: Settings, gateway: StripeGateway, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=("198.51.100.4", 40000)) as c:
        yield c


def _event(event_type: str, obj: dict[str, Any], n: int) -> str:
    event = fixture("event")
    event.update(id=f"evt_selfservice_{n}", type=event_type, data={"object": obj})
    return json.dumps(event)


def _post_event(client: TestClient, body: str) -> dict[str, Any]:
    r = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, secret=SECRET),
                                                                 "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_stripe_checkout_setup_then_webhook_attaches_the_card_and_recovers_at_once(
    client: TestClient, engine: Engine, settings: Settings, gateway: StripeGateway, sim: StripeSim, now: datetime,
    clock: Clock,
) -> None:
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        cust.gateway_customer_id = "cus_StripeAda"
        pm = make_card(s, now, cust, plan, gateway="stripe")
        sub_id = subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=now).id
        customer_id = cust.id
    assert run_cycle(engine, gateway, now=now, settings=settings).succeeded == 1
    renewal = now + timedelta(days=31, hours=1)
    run_cycle(engine, gateway, now=renewal - timedelta(days=7), settings=settings)  # the renewal's reminder
    sim.decline_next("insufficient_funds")
    assert run_cycle(engine, gateway, now=renewal, settings=settings).declined_soft == 1
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None and sub.status == SubscriptionStatus.PAST_DUE
        [open_invoice] = s.exec(select(Invoice).where(Invoice.status == InvoiceStatus.OPEN)).all()
    clock.at = renewal + timedelta(hours=3)
    path = links.make_account_url(settings, customer_id, clock.at).removeprefix(BASE)

    page = client.get(f"{path}/subscriptions/{sub_id}/card")
    assert page.status_code == 200
    assert "form-action 'self' https://checkout.stripe.com" in page.headers["Content-Security-Policy"]
    assert "test_token" not in page.text  # no card field of ours: Stripe hosts the form
    r = client.post(f"{path}/subscriptions/{sub_id}/card", headers={"User-Agent": "Mozilla/5.0 (Stripe test)"})
    assert r.status_code == 303 and r.headers["location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    [created] = sim.posts("/v1/checkout/sessions")
    assert created.params["mode"] == "setup" and created.params["currency"] == "usd"
    assert created.params["customer"] == "cus_StripeAda"
    assert created.params["success_url"].startswith(f"{BASE}/account/")
    with Session(engine) as s:
        update = s.exec(select(CardUpdate)).one()
    assert created.params["setup_intent_data"]["metadata"]["card_update_id"] == update.id
    assert created.idempotency_key == f"card_update:{update.id}"
    assert update.gateway_session_id and update.status == "open"
    charges = len(sim.succeeded_intents())

    # the customer types a card on Stripe's page; Stripe sends both events
    session_obj, setup_obj = sim.complete_checkout(update.gateway_session_id, "pm_card_mastercard")
    ack = _post_event(client, _event("checkout.session.completed", session_obj, 1))
    assert "card update" in ack["outcome"] and "retried at once" in ack["outcome"]
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None and sub.status == SubscriptionStatus.ACTIVE
        attempts = s.exec(select(PaymentAttempt).where(PaymentAttempt.invoice_id == open_invoice.id)
                          .order_by(col(PaymentAttempt.attempt_number))).all()
        assert [a.status for a in attempts] == ["failed", "succeeded"]
        assert s.exec(select(Invoice).where(Invoice.subscription_id == sub_id)).all().__len__() == 2
        consent = s.exec(select(Consent).where(Consent.payment_method_id == sub.payment_method_id)).one()
        assert consent.gateway_setup_id == setup_obj["id"]
        assert (consent.ip_address, consent.user_agent) == ("198.51.100.4", "Mozilla/5.0 (Stripe test)")
        assert consent.terms_text and "$17.00 every month" in consent.terms_text
    assert len(sim.succeeded_intents()) == charges + 1
    [intent] = [pi for pi in sim.succeeded_intents() if pi["metadata"]["attempt_id"] == attempts[1].id]
    assert intent["payment_method"] == "pm_card_mastercard"

    # the second event (and a redelivery) change nothing
    ack = _post_event(client, _event("setup_intent.succeeded", setup_obj, 2))
    assert "already completed" in ack["outcome"]
    assert _post_event(client, _event("checkout.session.completed", session_obj, 1))["duplicate"] is True
    assert len(sim.succeeded_intents()) == charges + 1


def test_a_session_that_is_not_ours_is_recorded_and_ignored(
    client: TestClient, sim: StripeSim, engine: Engine,
) -> None:
    obj = fixture("checkout_session")
    obj.update(id="cs_test_foreign", mode="setup", status="complete", metadata={}, client_reference_id=None)
    ack = _post_event(client, _event("checkout.session.completed", obj, 9))
    assert ack["outcome"].startswith("ignored")
    with Session(engine) as s:
        assert s.exec(select(CardUpdate)).first() is None
