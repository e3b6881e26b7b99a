"""``Idempotency-Key``: a retried create returns the first result instead of creating twice."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import create_plan, subscribe

CUSTOMER = {"email": "ada@example.com", "name": "Ada"}


def test_retried_create_returns_the_first_customer(client: TestClient) -> None:
    first = client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "k-1"})
    retry = client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/customers").json()["data"]) == 1


def test_same_key_with_a_different_body_is_refused(client: TestClient) -> None:
    client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "k-2"})
    r = client.post("/v1/customers", json=CUSTOMER | {"name": "Grace"}, headers={"Idempotency-Key": "k-2"})
    assert r.status_code == 422
    assert r.json()["field"] == "Idempotency-Key" and "different request" in r.json()["detail"]
    assert [c["name"] for c in client.get("/v1/customers").json()["data"]] == ["Ada"]


def test_without_a_key_each_post_creates(client: TestClient) -> None:
    client.post("/v1/customers", json=CUSTOMER)
    client.post("/v1/customers", json=CUSTOMER)
    assert len(client.get("/v1/customers").json()["data"]) == 2


def test_a_key_is_per_endpoint(client: TestClient) -> None:
    c = client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "shared"})
    p = client.post("/v1/plans", json={"code": "p", "name": "P", "amount_minor": 1, "currency": "USD"},
                    headers={"Idempotency-Key": "shared"})
    assert (c.status_code, p.status_code) == (201, 201)


def test_a_failed_request_is_not_remembered(client: TestClient) -> None:
    bad = client.post("/v1/customers", json={"email": "nope"}, headers={"Idempotency-Key": "k-3"})
    assert bad.status_code == 422
    good = client.post("/v1/customers", json={"email": "nope@example.com"}, headers={"Idempotency-Key": "k-3"})
    assert good.status_code == 201


def test_retried_cancel_replays_the_first_answer(client: TestClient) -> None:
    create_plan(client)
    sub = subscribe(client)
    first = client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at_period_end": False},
                        headers={"Idempotency-Key": "cancel-1"})
    retry = client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at_period_end": False},
                        headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == retry.status_code == 200 and retry.json() == first.json()


def test_key_must_be_visible_ascii(client: TestClient) -> None:
    r = client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "has space"})
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"
