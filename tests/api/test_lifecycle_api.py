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


def _paid_sub(client: TestClient, *, plans: tuple[tuple[str, int], ...] = (("basic-monthly", 1000), ("pro", 3000))):  # type: ignore[no-untyped-def]
    for code, amount in plans:
        create_plan(client, code, amount_minor=amount)
    cust = create_customer(client)
    pm = add_card(client, cust["id"], amount_minor=3000)
    r = _subscribe(client, cust["id"], pm["id"])
    assert r.status_code == 201, r.text
    return r.json()


def test_plan_change_preview_then_change_with_the_token(client: TestClient, gateway: FakeGateway, clock) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    sub = _paid_sub(client)
    clock.now = clock.now + timedelta(days=15)
    pv = client.post(f"/v1/subscriptions/{sub['id']}/plan-change/preview", json={"plan": "pro"})
    assert pv.status_code == 200, pv.text
    p = pv.json()
    assert p["direction"] == "upgrade" and p["timing"] == "now"
    assert p["amount_due_now_minor"] == p["charge_minor"] - p["credit_minor"] > 0
    clock.now = clock.now + timedelta(minutes=3)
    r = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"preview_token": p["preview_token"]},
                    headers={"Idempotency-Key": "up-1"})
    assert r.status_code == 200, r.text
    assert r.json()["change"] == "changed" and r.json()["subscription"]["plan_code"] == "pro"
    assert [e.amount_minor for e in gateway.ledger] == [1000, p["amount_due_now_minor"]]
    again = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"preview_token": p["preview_token"]},
                        headers={"Idempotency-Key": "up-1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.ledger) == 2
    tampered = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"preview_token": "x" + p["preview_token"]})
    assert tampered.status_code == 422 and tampered.json()["field"] == "preview_token"


def test_plan_change_errors_name_the_field(client: TestClient) -> None:
    sub = _paid_sub(client, plans=(("basic-monthly", 1000), ("pro", 3000), ("euro", 1000)))
    r = client.post(f"/v1/subscriptions/{sub['id']}/plan-change/preview", json={"plan": "pro", "when": "soon"})
    assert r.status_code == 422 and r.json()["field"] == "when"
    r = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"plan": "pro", "proration_behavior": "x"})
    assert r.status_code == 422 and r.json()["field"] == "proration_behavior"
    r = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"plan": "nope"})
    assert r.status_code == 404 and r.json()["field"] == "plan"
    r = client.post(f"/v1/subscriptions/{sub['id']}/plan-change", json={"plan": "basic-monthly"})
    assert r.status_code == 409 and r.json()["field"] == "plan"


def test_edits_over_the_api(client: TestClient) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"])
    r = client.patch(f"/v1/customers/{cust['id']}", json={"email": "new@example.com", "metadata": {"crm": "7"},
                                                          "default_payment_method": pm["id"]})
    assert r.status_code == 200, r.text
    assert (r.json()["email"], r.json()["metadata"], r.json()["default_payment_method_id"]) == \
        ("new@example.com", {"crm": "7"}, pm["id"])
    bad = client.patch(f"/v1/customers/{cust['id']}", json={"metadata": {"k": "x" * 501}})
    assert bad.status_code == 422 and bad.json()["field"].startswith("metadata")
    bad = client.patch(f"/v1/customers/{cust['id']}", json={"email": "nope"})
    assert bad.status_code == 422 and bad.json()["field"] == "email"
    plan = client.patch("/v1/plans/basic-monthly/terms", json={"guarantee_days": 30, "metadata": {"tier": "b"}})
    assert plan.status_code == 200 and plan.json()["guarantee_days"] == 30
    assert plan.json()["customer_can_pause"] is False  # the default: customers may not pause
    plan = client.patch("/v1/plans/basic-monthly/terms", json={"customer_can_pause": True})
    assert plan.status_code == 200 and plan.json()["customer_can_pause"] is True
    bad = client.patch("/v1/plans/basic-monthly/terms", json={"customer_can_pause": "yes"})
    assert bad.status_code == 422 and bad.json()["field"] == "customer_can_pause"
    sub = client.post("/v1/subscriptions", json={"customer": cust["id"], "plan": "basic-monthly",
                                                 "metadata": {"src": "web"}})  # the default card
    assert sub.status_code == 201 and sub.json()["metadata"] == {"src": "web"}
    upd = client.patch(f"/v1/subscriptions/{sub.json()['id']}", json={"metadata": {"src": None, "a": "b"}})
    assert upd.status_code == 200 and upd.json()["metadata"] == {"a": "b"}
    g = client.post(f"/v1/subscriptions/{sub.json()['id']}/guarantee-refund")
    assert g.status_code == 200 and g.json()["amount_minor"] == 1700
    assert client.get(f"/v1/subscriptions/{sub.json()['id']}").json()["status"] == "canceled"
    react = client.post(f"/v1/subscriptions/{sub.json()['id']}/reactivate", json={})
    assert react.status_code == 201 and react.json()["reactivated_from"] == sub.json()["id"]
    assert react.json()["first_charge"]["status"] == "succeeded"
