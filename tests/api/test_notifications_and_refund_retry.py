"""Parity with the CLI: the e-mail outbox (`billing notifications list|send`) and
`billing refund retry` over the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import GatewayUnreachable
from tests.api.conftest import create_plan, subscribe


def test_outbox_lists_queued_receipts_and_send_flushes_them(client: TestClient, tmp_path,  # type: ignore[no-untyped-def]
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    create_plan(client)
    subscribe(client)
    client.post("/v1/run-cycle", json={"send_emails": False})
    listed = client.get("/v1/notifications?status=pending")
    assert listed.status_code == 200, listed.text
    kinds = [n["kind"] for n in listed.json()["data"]]
    assert "receipt" in kinds
    settings = client.app.state.settings  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "mail_transport", "file")
    monkeypatch.setattr(settings, "mail_dir", str(tmp_path))
    sent = client.post("/v1/notifications/send")
    assert sent.status_code == 200, sent.text
    assert sent.json()["sent"] == len(kinds) == len(list(tmp_path.glob("*.eml")))
    assert sent.json()["counts"]["pending"] == 0
    assert client.post("/v1/notifications/send").json()["sent"] == 0  # never twice


def test_bad_outbox_filter_names_the_field(client: TestClient) -> None:
    r = client.get("/v1/notifications?status=lost")
    assert r.status_code == 422 and r.json()["field"] == "status"


def test_refund_left_pending_by_an_outage_is_retried_once(client: TestClient, gateway: FakeGateway,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    create_plan(client)
    subscribe(client)
    client.post("/v1/run-cycle", json={"send_emails": False})
    [inv] = client.get("/v1/invoices?status=paid").json()["data"]
    real_refund = gateway.refund

    def down(request):  # type: ignore[no-untyped-def]
        raise GatewayUnreachable("connection reset")

    monkeypatch.setattr(gateway, "refund", down)
    first = client.post("/v1/refunds", json={"invoice_id": inv["id"], "amount_minor": 500})
    assert first.status_code in (201, 503), first.text
    [pending] = client.get(f"/v1/refunds?invoice={inv['id']}").json()["data"]
    assert pending["status"] == "pending" and gateway.total_refunded("USD") == 0
    monkeypatch.setattr(gateway, "refund", real_refund)
    retried = client.post(f"/v1/refunds/{pending['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "succeeded"
    assert client.post(f"/v1/refunds/{pending['id']}/retry").json()["status"] == "succeeded"
    assert gateway.total_refunded("USD") == 500  # once, whatever the retries
    assert client.post("/v1/refunds/re_nope/retry").status_code == 404
