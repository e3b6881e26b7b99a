"""POST /webhooks/stripe: signatures, replays, duplicates, unknown events."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine.db import transaction
from billing_engine.models import Event, PaymentAttempt, Subscription, WebhookEvent

from .conftest import Post, make_client
from .stripe_events import body_of, counts, event, get, intent, pending_attempt, sign, subscribed


def succeeded_event(engine: Engine, now: datetime) -> tuple[dict, PaymentAttempt]:  # type: ignore[type-arg]
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    return event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Webhook0001")), attempt


def test_valid_signed_event_is_applied_and_recorded(engine: Engine, now: datetime, post: Post) -> None:
    e, attempt = succeeded_event(engine, now)
    r = post(e)
    assert r.status_code == 200, r.text
    assert r.json() | {"outcome": None} == {"received": True, "event_id": e["id"], "type": "payment_intent.succeeded",
                                            "duplicate": False, "outcome": None}
    assert r.json()["outcome"].startswith(f"settled attempt {attempt.id}: succeeded")
    settled = get(engine, PaymentAttempt, attempt.id)
    assert (settled.status, settled.gateway_charge_id) == ("succeeded", "pi_3Webhook0001")
    assert get(engine, Subscription, attempt.subscription_id).status == "active"
    row = get(engine, WebhookEvent, e["id"])
    assert (row.type, row.handled_at, row.gateway) == ("payment_intent.succeeded", now, "stripe")
    assert row.payload == body_of(e)


def test_the_same_event_delivered_twice_is_applied_once(engine: Engine, now: datetime, post: Post) -> None:
    e, attempt = succeeded_event(engine, now)
    assert post(e).json()["duplicate"] is False
    after_first = counts(engine)
    again = post(e)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["outcome"].startswith("settled attempt")  # the first delivery's outcome
    assert counts(engine) == after_first
    with transaction(engine) as s:
        paid = s.exec(select(Event).where(Event.type == "invoice.paid")).all()
    assert len(paid) == 1


def test_a_replayed_body_under_a_fresh_signature_is_still_a_duplicate(engine: Engine, now: datetime,
                                                                       post: Post) -> None:
    e, _ = succeeded_event(engine, now)
    post(e)
    before = counts(engine)
    r = post(body_of(e), header=sign(body_of(e), at=time.time() + 5))
    assert (r.status_code, r.json()["duplicate"]) == (200, True)
    assert counts(engine) == before


@pytest.mark.parametrize("case", ["forged", "stale", "missing", "garbage", "tampered"])
def test_bad_signature_is_400_and_changes_nothing(engine: Engine, now: datetime, post: Post, case: str) -> None:
    e, attempt = succeeded_event(engine, now)
    body = body_of(e)
    header: str | None = {
        "forged": sign(body, secret="whsec_attacker"),
        "stale": sign(body, at=time.time() - 301),
        "missing": None,
        "garbage": "definitely not a signature",
        "tampered": sign(body.replace('"succeeded"', '"canceled"')),
    }[case]
    before = counts(engine)
    r = post(body, header=header)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert (problem["status"], problem["code"], problem["field"]) == (400, "invalid_signature", "Stripe-Signature")
    assert counts(engine) == before
    assert get(engine, PaymentAttempt, attempt.id).status == "pending"


def test_signed_body_that_is_not_an_event_is_400(engine: Engine, post: Post) -> None:
    before = counts(engine)
    for body in ("not json", '{"id": "evt_1", "object": "charge"}', "{}"):
        r = post(body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["code"] == "invalid_event"
    assert counts(engine) == before


def test_without_a_configured_secret_the_endpoint_answers_503(db_url: str, engine: Engine, now: datetime) -> None:
    e, _ = succeeded_event(engine, now)
    before = counts(engine)
    with make_client(db_url, engine, now, secret=None) as c:
        r = c.post("/webhooks/stripe", content=body_of(e), headers={"Stripe-Signature": sign(body_of(e))})
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "webhook secret not configured" in r.json()["detail"]
    assert counts(engine) == before


def test_unknown_event_type_is_200_and_recorded(engine: Engine, now: datetime, post: Post) -> None:
    e = event("customer.subscription.trial_will_end", {"id": "sub_123", "object": "subscription"})
    before = counts(engine)
    r = post(e)
    assert r.status_code == 200
    assert r.json()["outcome"] == "ignored: customer.subscription.trial_will_end is not handled"
    row = get(engine, WebhookEvent, e["id"])
    assert row.handled_at == now
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 1}


def test_the_fixture_event_as_stripe_ships_it_is_recorded(engine: Engine, now: datetime, post: Post) -> None:
    from tests.gateway.stripe_sim import fixture

    e = fixture("event")  # a plan.created event, verbatim
    r = post(e)
    assert (r.status_code, r.json()["event_id"], r.json()["duplicate"]) == (200, e["id"], False)
    assert r.json()["outcome"].startswith("ignored")


def test_the_endpoint_needs_no_admin_token(engine: Engine, now: datetime, post: Post) -> None:
    e, _ = succeeded_event(engine, now)
    r = post(e)  # no Authorization header
    assert r.status_code == 200


def test_an_oversized_body_is_refused_before_anything_else(engine: Engine, post: Post) -> None:
    before = counts(engine)
    r = post("{" + " " * 1_000_001 + "}")
    assert (r.status_code, r.json()["code"]) == (413, "too_large")
    assert counts(engine) == before
