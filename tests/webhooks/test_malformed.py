"""Signed but malformed Stripe webhooks: a 400 problem naming the body, nothing stored."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from billing_engine.gateway import FakeGateway
from billing_engine.settings import load_settings

from .conftest import Post
from .stripe_events import body_of, charge, counts, dispute, event, intent, paid_attempt, pending_attempt, subscribed

NOT_OBJECTS = {
    "array": "[]",
    "array-of-event": "[" + json.dumps({"id": "evt_1", "object": "event", "type": "charge.refunded"}) + "]",
    "string": '"evt_1"',
    "number": "42",
    "null": "null",
    "deep-array": "[" * 5000 + "]" * 5000,
    "deep-object": '{"id":"evt_deep","object":"event","type":"charge.refunded","data":' + '{"a":' * 5000 + "1"
                   + "}" * 5000 + "}",
}


@pytest.mark.parametrize("body", NOT_OBJECTS.values(), ids=NOT_OBJECTS.keys())
def test_a_signed_body_that_is_not_an_event_object_is_a_400(engine: Engine, post: Post, body: str) -> None:
    before = counts(engine)
    r = post(body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "body"
    assert counts(engine) == before


def _paid(engine: Engine, db_url: str, now: datetime) -> str:
    from billing_engine.cycle import run_cycle
    from tests.webhooks.stripe_events import only_invoice

    billed = subscribed(engine, now)
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings(database_url=db_url))
    return paid_attempt(engine, only_invoice(engine, billed.subscription_id).id).gateway_charge_id or ""


def _bad_fields(engine: Engine, db_url: str, now: datetime) -> list[dict[str, Any]]:
    pi = _paid(engine, db_url, now)
    bad = [
        event("charge.refunded", charge(pi, amount=1700, amount_refunded=500) | {"amount_refunded": "abc"}),
        event("charge.refunded", charge(pi, amount=1700, amount_refunded=500) | {"amount_refunded": 10**30}),
        event("charge.refunded", charge(pi, amount=1700, amount_refunded=500) | {"refunds": {"data": [
            {"id": "re_x", "object": "refund", "amount": "abc", "status": "succeeded"}]}}),
        event("charge.dispute.created", dispute("dp_1", pi, status="needs_response") | {"amount": "abc"}),
        event("charge.refunded", charge(pi, amount=1700, amount_refunded=500) | {"metadata": "not-a-dict"}),
        event("charge.refunded", "not-an-object"),  # type: ignore[arg-type]
        event("payment_intent.succeeded", {"id": 5, "object": "payment_intent", "amount": "abc",
                                           "metadata": ["x"]}),
    ]
    return bad


def test_signed_events_with_malformed_fields_are_a_400_and_store_nothing(engine: Engine, db_url: str,
                                                                        now: datetime, post: Post) -> None:
    for e in _bad_fields(engine, db_url, now):
        before = counts(engine)
        r = post(body_of(e))
        assert r.status_code in (200, 400), (e["data"], r.text)
        if r.status_code == 400:
            assert r.json()["field"] == "body"
            assert counts(engine) == before, e["data"]
        else:  # ignored on purpose (e.g. "not an object"): recorded, nothing applied
            assert r.json()["outcome"].startswith("ignored"), r.text


def test_an_amount_that_is_not_a_number_is_a_400(engine: Engine, db_url: str, now: datetime, post: Post) -> None:
    pi = _paid(engine, db_url, now)
    before = counts(engine)
    r = post(event("charge.refunded", charge(pi, amount=1700, amount_refunded=500) | {"amount_refunded": "abc"}))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body" and "amount_refunded" in r.json()["detail"]
    assert counts(engine) == before


def test_a_pending_attempt_event_with_a_bad_amount_is_a_400(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    before = counts(engine)
    r = post(event("payment_intent.succeeded", intent(attempt) | {"amount_received": "abc", "amount": "abc"}))
    assert r.status_code == 400, r.text
    assert counts(engine) == before
