"""``/v1/refunds``: money back on a paid invoice, never more than was collected."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing_engine.gateway.fake import FakeGateway
from tests.api.conftest import create_plan, subscribe


@pytest.fixture
def invoice(client: TestClient) -> dict[str, object]:
    create_plan(client)
    subscribe(client)
    client.post("/v1/run-cycle", json={"send_emails": False})
    [inv] = client.get("/v1/invoices?status=paid").json()["data"]
    return inv


def test_full_refund_returns_everything_collected(client: TestClient, gateway: FakeGateway,
                                                 invoice: dict[str, object]) -> None:
    r = client.post("/v1/refunds", json={"invoice_id": invoice["id"], "reason": "requested_by_customer"})
    assert r.status_code == 201, r.text
    refund = r.json()
    assert (refund["amount_minor"], refund["currency"], refund["status"]) == (1700, "USD", "succeeded")
    assert gateway.total_refunded("USD") == 1700 and gateway.net_collected("USD") == 0
    shown = client.get(f"/v1/invoices/{invoice['id']}").json()
    assert shown["amount_refunded_minor"] == 1700 and [x["id"] for x in shown["refunds"]] == [refund["id"]]
    assert client.get(f"/v1/refunds/{refund['id']}").json() == refund
    again = client.post("/v1/refunds", json={"invoice_id": invoice["id"]})
    assert again.status_code == 422 and again.json()["field"] == "amount_minor"


def test_partial_refunds_add_up_to_at_most_the_amount_paid(client: TestClient, gateway: FakeGateway,
                                                          invoice: dict[str, object]) -> None:
    assert client.post("/v1/refunds", json={"invoice_id": invoice["id"], "amount_minor": 500}).status_code == 201
    too_much = client.post("/v1/refunds", json={"invoice_id": invoice["id"], "amount_minor": 1201})
    assert too_much.status_code == 422 and too_much.json()["field"] == "amount_minor"
    assert "12.00 USD still refundable" in too_much.json()["detail"]
    rest = client.post("/v1/refunds", json={"invoice_id": invoice["id"]}).json()
    assert rest["amount_minor"] == 1200
    assert gateway.total_refunded("USD") == 1700
    listed = client.get(f"/v1/refunds?invoice={invoice['id']}").json()["data"]
    assert [x["amount_minor"] for x in listed] == [500, 1200]


def test_refund_of_an_unpaid_invoice_is_a_conflict(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    subscribe(client, token="pm_card_chargeDeclinedInsufficientFunds")
    client.post("/v1/run-cycle", json={"send_emails": False})
    [inv] = client.get("/v1/invoices").json()["data"]
    r = client.post("/v1/refunds", json={"invoice_id": inv["id"], "amount_minor": 100})
    assert r.status_code == 409 and r.json()["field"] == "invoice"
    assert gateway.total_refunded("USD") == 0


def test_refund_in_another_currency_or_for_an_unknown_invoice_is_refused(client: TestClient,
                                                                        invoice: dict[str, object]) -> None:
    r = client.post("/v1/refunds", json={"invoice_id": invoice["id"], "amount_minor": 100, "currency": "EUR"})
    assert r.status_code == 422 and r.json()["field"] == "currency"
    r = client.post("/v1/refunds", json={"invoice_id": "in_nope", "amount_minor": 100})
    assert r.status_code == 404 and r.json()["field"] == "invoice"
    r = client.post("/v1/refunds", json={"invoice_id": invoice["id"], "reason": "because"})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = client.post("/v1/refunds", json={"invoice_id": invoice["id"], "amount_minor": 0})
    assert r.status_code == 422 and r.json()["field"] == "amount_minor"


def test_retried_refund_with_the_same_key_refunds_once(client: TestClient, gateway: FakeGateway,
                                                       invoice: dict[str, object]) -> None:
    body = {"invoice_id": invoice["id"], "amount_minor": 300}
    first = client.post("/v1/refunds", json=body, headers={"Idempotency-Key": "refund-1"})
    retry = client.post("/v1/refunds", json=body, headers={"Idempotency-Key": "refund-1"})
    assert first.status_code == retry.status_code == 201 and first.json() == retry.json()
    assert gateway.total_refunded("USD") == 300
