"""``Idempotency-Key`` on the POSTs added by the later branches: a retried webhook-endpoint
create or coupon create makes one object, not two; a retried secret rotation rotates once."""

from __future__ import annotations

from fastapi.testclient import TestClient

ENDPOINT = {"url": "https://hooks.example.com/billing", "events": ["customer.created"]}
COUPON = {"code": "spring10", "percent_off": 10, "duration": "once"}


def test_retried_webhook_endpoint_create_makes_one_endpoint(client: TestClient) -> None:
    first = client.post("/v1/webhook_endpoints", json=ENDPOINT, headers={"Idempotency-Key": "we-1"})
    retry = client.post("/v1/webhook_endpoints", json=ENDPOINT, headers={"Idempotency-Key": "we-1"})
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    assert [e["id"] for e in client.get("/v1/webhook_endpoints").json()["data"]] == [first.json()["id"]]

    other = client.post("/v1/webhook_endpoints", json=ENDPOINT | {"description": "other"},
                        headers={"Idempotency-Key": "we-1"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert len(client.get("/v1/webhook_endpoints").json()["data"]) == 1


def test_retried_secret_rotation_rotates_once(client: TestClient) -> None:
    ep = client.post("/v1/webhook_endpoints", json=ENDPOINT).json()
    url = f"/v1/webhook_endpoints/{ep['id']}/rotate-secret"
    first = client.post(url, json={"grace_hours": 1}, headers={"Idempotency-Key": "rot-1"})
    retry = client.post(url, json={"grace_hours": 1}, headers={"Idempotency-Key": "rot-1"})
    assert first.status_code == retry.status_code == 200, first.text
    assert retry.json()["secret"] == first.json()["secret"] != ep["secret"]
    assert client.post(url, json={"grace_hours": 0}, headers={"Idempotency-Key": "rot-1"}).status_code == 422


def test_retried_coupon_create_makes_one_coupon(client: TestClient) -> None:
    first = client.post("/v1/coupons", json=COUPON, headers={"Idempotency-Key": "cp-1"})
    retry = client.post("/v1/coupons", json=COUPON, headers={"Idempotency-Key": "cp-1"})
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    assert [c["id"] for c in client.get("/v1/coupons").json()["data"]] == [first.json()["id"]]

    other = client.post("/v1/coupons", json=COUPON | {"percent_off": 20}, headers={"Idempotency-Key": "cp-1"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
