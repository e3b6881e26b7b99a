"""Stripe webhook signature verification."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from billing_engine.gateway import GatewayError, WebhookSignatureInvalid, construct_event

from .stripe_sim import fixture

SECRET = "whsec_test_secret"


def payload() -> str:
    event = fixture("event")
    pi = fixture("payment_intent")
    pi.update(status="succeeded", metadata={"idempotency_key": "inv_1:attempt_1"})
    event.update(type="payment_intent.succeeded", data={"object": pi})
    return json.dumps(event)


def sign(body: str, *, secret: str = SECRET, at: float | None = None) -> str:
    return str(
        stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=int(at if at is not None else time.time())
        )
    )


def test_valid_signature_gives_the_event() -> None:
    body = payload()
    event = construct_event(body.encode(), sign(body), SECRET)
    assert event["type"] == "payment_intent.succeeded"
    assert event["data"]["object"]["metadata"] == {"idempotency_key": "inv_1:attempt_1"}
    assert isinstance(event, dict)


def test_forged_signature() -> None:
    body = payload()
    with pytest.raises(WebhookSignatureInvalid):
        construct_event(body.encode(), sign(body, secret="whsec_attacker"), SECRET)


def test_tampered_body() -> None:
    body = payload()
    header = sign(body)
    with pytest.raises(WebhookSignatureInvalid):
        construct_event(body.replace("succeeded", "canceled").encode(), header, SECRET)


def test_stale_signature() -> None:
    body = payload()
    with pytest.raises(WebhookSignatureInvalid, match="tolerance"):
        construct_event(body.encode(), sign(body, at=time.time() - 301), SECRET)


def test_tolerance_is_configurable() -> None:
    body = payload()
    header = sign(body, at=time.time() - 301)
    assert construct_event(body.encode(), header, SECRET, tolerance=600)["object"] == "event"
    with pytest.raises(ValueError):
        construct_event(body.encode(), header, SECRET, tolerance=0)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=123"])
def test_missing_or_malformed_header(header: str | None) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        construct_event(payload().encode(), header, SECRET)


def test_missing_secret_is_a_configuration_problem() -> None:
    body = payload()
    with pytest.raises(GatewayError, match="secret"):
        construct_event(body.encode(), sign(body), "")


def test_signed_garbage_is_not_an_event() -> None:
    with pytest.raises(GatewayError, match="not a Stripe event") as caught:
        construct_event(b"not json", sign("not json"), SECRET)
    assert not isinstance(caught.value, WebhookSignatureInvalid)
