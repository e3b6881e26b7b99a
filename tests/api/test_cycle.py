"""``POST /v1/run-cycle``: the same run-cycle as ``billing run-cycle``, triggered over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from billing_engine.gateway.fake import FakeGateway
from tests.api.conftest import Clock, create_plan, subscribe


def test_run_cycle_charges_a_due_subscription(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    sub = subscribe(client)
    r = client.post("/v1/run-cycle", json={"send_emails": False})
    assert r.status_code == 200, r.text
    summary = r.json()
    assert (summary["due"], summary["succeeded"], summary["collected"]) == (1, 1, {"USD": 1700})
    assert summary["collected_display"] == {"USD": "17.00"}
    assert gateway.total_collected("USD") == 1700
    assert client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "active"
    again = client.post("/v1/run-cycle", json={"send_emails": False}).json()
    assert again["charged"] == 0 and gateway.total_collected("USD") == 1700


def test_dry_run_lists_what_would_be_charged_and_changes_nothing(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    sub = subscribe(client)
    r = client.post("/v1/run-cycle", json={"dry_run": True})
    assert r.status_code == 200
    [would] = r.json()["would_charge"]
    assert (would["subscription_id"], would["amount_minor"], would["action"]) == (sub["id"], 1700, "charge")
    assert gateway.ledger == [] and [c for c in gateway.calls if c[0] in ("charge", "find_charge", "refund")] == []
    assert client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "incomplete"
    assert client.get("/v1/invoices").json()["data"] == []


def test_run_cycle_at_a_later_time_renews(client: TestClient, gateway: FakeGateway, clock: Clock) -> None:
    create_plan(client)
    sub = subscribe(client)
    client.post("/v1/run-cycle", json={"send_emails": False})
    early = client.post("/v1/run-cycle", json={"at": "2026-02-08T09:00:00+00:00", "send_emails": False})
    assert early.json()["reminders_queued"] == 1 and early.json()["succeeded"] == 0  # the reminder, 7 days ahead
    r = client.post("/v1/run-cycle", json={"at": "2026-02-15T09:00:00+00:00", "send_emails": False})
    assert r.json()["succeeded"] == 1 and r.json()["at"] == "2026-02-15T09:00:00Z"
    assert gateway.total_collected("USD") == 3400
    shown = client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert shown["current_period_end"] == "2026-03-15T09:00:00Z"


def test_run_cycle_without_a_body_runs_now(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    subscribe(client)
    assert client.post("/v1/run-cycle").json()["succeeded"] == 1


def test_run_cycle_refuses_a_naive_or_absurd_time(client: TestClient, gateway: FakeGateway) -> None:
    for at in ["2026-02-15T09:00:00", "yesterday", "9999-12-31T23:59:59-23:00", 1767225600]:
        r = client.post("/v1/run-cycle", json={"at": at})
        assert r.status_code == 422 and r.json()["field"] == "at", (at, r.text)
    assert [c for c in gateway.calls if c[0] in ("charge", "find_charge", "refund")] == []


def test_declined_card_is_reported_not_an_error(client: TestClient, gateway: FakeGateway) -> None:
    create_plan(client)
    subscribe(client, token="pm_card_chargeDeclinedInsufficientFunds")
    summary = client.post("/v1/run-cycle", json={"send_emails": False}).json()
    assert summary["declined_soft"] == 1 and summary["succeeded"] == 0
    [inv] = client.get("/v1/invoices").json()["data"]
    attempts = client.get(f"/v1/invoices/{inv['id']}/payment-attempts").json()["data"]
    assert attempts[0]["status"] == "failed" and attempts[0]["decline_code"] == "insufficient_funds"
    assert client.get(f"/v1/payment-attempts/{attempts[0]['id']}").json() == attempts[0]
