"""card_setup.add_with_setup: a SetupIntent (off_session, confirmed) before the card and
its consent are stored; anything but success stores nothing."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine import card_setup, subscriptions
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import Conflict, GatewayUnavailable, ValidationError
from billing_engine.gateway import FakeGateway, StripeGateway
from billing_engine.models import Consent, PaymentMethod, Plan
from billing_engine.settings import Settings
from tests.factories import consent_for, make_customer, make_plan
from tests.gateway.stripe_sim import Fault, Reply, StripeSim, fixture
from tests.webhooks.stripe_events import counts


def setup_customer(engine: Engine, now: datetime) -> tuple[str, str]:
    with transaction(engine) as s:
        plan = make_plan(s, now)
        cust = make_customer(s, now)
        cust.gateway_customer_id = "cus_Sim123"
        s.add(cust)
        return cust.id, plan.id


def add(engine: Engine, gateway: object, now: datetime, customer_id: str, plan_id: str, token: str,
        **consent: object) -> tuple[str, str]:
    with transaction(engine) as s:
        plan = s.get(Plan, plan_id)
        assert plan is not None
        pm, c = card_setup.add_with_setup(s, gateway, customer_id=customer_id, token=token,  # type: ignore[arg-type]
                                          consent=consent_for(plan, now, **consent), now=now)
        return pm.id, c.id


def test_a_set_up_card_is_stored_with_its_setup_intent(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    pm_id, consent_id = add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_mastercard")
    [request] = sim.posts("/v1/setup_intents")
    assert (request.params["usage"], request.params["confirm"], request.params["customer"],
            request.params["payment_method"]) == ("off_session", "true", "cus_Sim123", "pm_card_mastercard")
    assert (request.idempotency_key or "").startswith(f"card_setup:{customer_id}:pm_card_mastercard:")
    with transaction(engine) as s:
        consent = s.get(Consent, consent_id)
        assert consent is not None and consent.gateway_setup_id and consent.gateway_setup_id.startswith("seti_")
        pm = s.get(PaymentMethod, pm_id)
        assert pm is not None
        assert (pm.gateway, pm.token, pm.brand, pm.last4, pm.exp_year) == (
            "stripe", "pm_card_mastercard", "mastercard", "4444", 2034)
        sub = subscriptions.create(s, customer_id=customer_id, plan_id=plan_id, payment_method_id=pm_id, now=now)
    summary = run_cycle(engine, stripe_gateway, now=now, settings=settings)
    assert summary.succeeded == 1
    [intent] = sim.payment_intents.values()
    assert (intent["customer"], intent["metadata"]["subscription_id"]) == ("cus_Sim123", sub.id)


def test_the_same_request_again_reuses_the_setup_intent(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_visa")
    add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_visa")
    keys = [r.idempotency_key for r in sim.posts("/v1/setup_intents")]
    assert len(keys) == 2 and len(set(keys)) == 1


def test_requires_action_is_a_conflict_and_stores_nothing(
    engine: Engine, now: datetime, stripe_gateway: StripeGateway
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    before = counts(engine)
    with pytest.raises(Conflict, match="3-D Secure") as caught:
        add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_authenticationRequiredOnSetup")
    assert caught.value.field == "token"
    assert counts(engine) == before


def test_a_card_refused_at_setup_is_a_conflict_and_stores_nothing(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    error = fixture("error_card_declined")
    error["error"].update(code="card_declined", decline_code="generic_decline", message="Your card was declined.",
                          setup_intent={"id": "seti_3Refused", "object": "setup_intent"})
    sim.script(Reply(402, error))
    before = counts(engine)
    with pytest.raises(Conflict, match="declined"):
        add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_chargeDeclined")
    assert counts(engine) == before


def test_stripe_unreachable_is_unavailable_and_stores_nothing(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    sim.script(*[Fault.SERVER_ERROR] * 4)
    before = counts(engine)
    with pytest.raises(GatewayUnavailable):
        add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_visa")
    assert counts(engine) == before


def test_an_unknown_token_names_the_token(engine: Engine, now: datetime, stripe_gateway: StripeGateway) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    with pytest.raises(ValidationError) as caught:
        add(engine, stripe_gateway, now, customer_id, plan_id, "pm_doesNotExist")
    assert caught.value.field == "token"


def test_bad_consent_is_refused_before_calling_the_gateway(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway
) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    with pytest.raises(ValidationError) as caught:
        add(engine, stripe_gateway, now, customer_id, plan_id, "pm_card_visa", ip_address="nowhere")
    assert caught.value.field == "consent.ip_address"
    assert sim.requests == []


def test_works_with_the_fake_gateway_too(engine: Engine, now: datetime) -> None:
    customer_id, plan_id = setup_customer(engine, now)
    fake = FakeGateway()
    add(engine, fake, now, customer_id, plan_id, "pm_card_visa")
    with pytest.raises(Conflict):
        add(engine, fake, now, customer_id, plan_id, "pm_card_authenticationRequiredOnSetup")
    with transaction(engine) as s:
        assert [c.gateway_setup_id for c in s.exec(select(Consent))] == ["seti_fake_000001"]
