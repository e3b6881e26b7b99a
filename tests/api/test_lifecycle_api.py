"""Lifecycle over the admin API: subscribe charges at once, plan changes, reactivation, edits."""

from __future__ import annotations

from fastapi.testclient import TestClient

from billing_engine.gateway.fake import FakeGateway
from tests.api.conftest import add_card, create_customer, create_plan

DECLINES = "pm_card_chargeDeclinedInsufficientFunds"


def _subscribe(client: TestClient, cust: str, pm: str, key: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/subscriptions", json={"customer": cust, "plan": "basic-monthly", "payment_method": pm} | kw,
                       headers=headers)


def test_subscribe_with_a_good_card_answers_active_and_charged(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"])
    r = _subscribe(client, cust["id"], pm["id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "active" and body["first_charge"]["status"] == "succeeded"
    assert (body["first_charge"]["amount_minor"], body["first_charge"]["currency"]) == (1700, "USD")
    assert [(e.kind, e.amount_minor) for e in gateway.ledger] == [("charge", 1700)]
    again = _subscribe(client, cust["id"], pm["id"])  # the same request again: already subscribed, no charge
    assert again.status_code == 409 and again.json()["field"] == "plan"
    assert len(gateway.ledger) == 1


def test_a_declined_subscribe_is_402_and_its_retry_with_the_same_key_charges_nothing(
        client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"], DECLINES)
    r = _subscribe(client, cust["id"], pm["id"], key="checkout-1")
    assert r.status_code == 402, r.text
    body = r.json()
    assert body["code"] == "payment_declined" and body["field"] == "payment_method"
    assert "insufficient_funds" in body["detail"] and "nothing was charged" in body["detail"]
    assert body["subscription"]["status"] == "incomplete_expired"
    assert body["subscription"]["first_charge"]["decline_code"] == "insufficient_funds"
    calls = len(gateway.calls)
    replay = _subscribe(client, cust["id"], pm["id"], key="checkout-1")
    assert replay.status_code == 402 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == body and len(gateway.calls) == calls  # not sent again
    invoices = client.get("/v1/invoices", params={"subscription": body["subscription"]["id"]}).json()["data"]
    assert [i["status"] for i in invoices] == ["void"] and gateway.ledger == []


def test_allow_incomplete_keeps_the_subscription_and_a_new_card_pays_it(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    cust = create_customer(client)
    bad = add_card(client, cust["id"], DECLINES)
    good = add_card(client, cust["id"], "pm_card_visa")
    r = _subscribe(client, cust["id"], bad["id"], payment_behavior="allow_incomplete")
    assert r.status_code == 402 and r.json()["subscription"]["status"] == "incomplete"
    assert r.json()["subscription"]["first_charge"]["kept_incomplete"] is True
    ok = _subscribe(client, cust["id"], good["id"], payment_behavior="allow_incomplete")
    assert ok.status_code == 201 and ok.json()["id"] == r.json()["subscription"]["id"]
    assert ok.json()["status"] == "active" and len(gateway.ledger) == 1


def test_an_unknown_payment_behavior_names_the_field(client: TestClient) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"])
    r = _subscribe(client, cust["id"], pm["id"], payment_behavior="sometimes")
    assert r.status_code == 422 and r.json()["field"] == "payment_behavior"
