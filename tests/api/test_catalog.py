"""Plans, customers and cards with consent over the admin API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import TERMS, add_card, consent, create_customer, create_plan, subscribe


def test_created_plan_is_shown_with_amount_in_minor_units_and_display(client: TestClient) -> None:
    plan = create_plan(client, "pro-yearly", amount_minor=12000, currency="jpy", interval="year")
    assert (plan["amount_minor"], plan["currency"], plan["amount"]) == (12000, "JPY", "12000")
    shown = client.get(f"/v1/plans/{plan['id']}").json()
    assert shown == client.get("/v1/plans/pro-yearly").json()
    assert shown["interval"] == "year" and shown["subscriber_count"] == 0


def test_plan_list_filters_on_active(client: TestClient) -> None:
    create_plan(client, "a-plan")
    create_plan(client, "b-plan")
    r = client.patch("/v1/plans/b-plan", json={"active": False, "name": "B (retired)"})
    assert r.status_code == 200 and r.json()["name"] == "B (retired)"
    assert [p["code"] for p in client.get("/v1/plans").json()["data"]] == ["a-plan", "b-plan"]
    assert [p["code"] for p in client.get("/v1/plans?active=true").json()["data"]] == ["a-plan"]
    assert [p["code"] for p in client.get("/v1/plans?active=false").json()["data"]] == ["b-plan"]


def test_plan_with_subscribers_cannot_be_repriced(client: TestClient) -> None:
    create_plan(client)
    subscribe(client)
    r = client.patch("/v1/plans/basic-monthly", json={"amount_minor": 1900})
    assert r.status_code == 409
    assert r.json()["field"] == "amount_minor" and "Create a new plan" in r.json()["detail"]


def test_duplicate_plan_code_is_a_conflict(client: TestClient) -> None:
    create_plan(client)
    r = client.post("/v1/plans", json={"code": "basic-monthly", "name": "Again", "amount_minor": 1, "currency": "USD"})
    assert r.status_code == 409 and r.json()["field"] == "code"


def test_plan_validation_errors_name_the_field(client: TestClient) -> None:
    cases = [
        ({"currency": "XYZ"}, "currency", "unknown currency 'XYZ'"),
        ({"amount_minor": -1}, "amount_minor", "at least 0"),
        ({"amount_minor": 10**30}, "amount_minor", "at most"),
        ({"amount_minor": "17.00"}, "amount_minor", "must be an integer"),
        ({"interval": "fortnight"}, "interval", "unknown interval"),
        ({"interval": "month", "interval_count": 30}, "interval_count", "between 1 and 24"),
        ({"code": "Has Spaces"}, "code", "lower-case"),
        ({"name": "nul\x00byte"}, "name", "NUL"),
        ({"colour": "red"}, "colour", "unknown field"),
    ]
    for patch, field, words in cases:
        body = {"code": "ok-code", "name": "Ok", "amount_minor": 100, "currency": "USD"} | patch
        r = client.post("/v1/plans", json=body)
        assert r.status_code == 422, (patch, r.text)
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["field"] == field and words in problem["detail"], (patch, problem)
    assert client.get("/v1/plans").json()["data"] == []


def test_missing_fields_are_all_listed(client: TestClient) -> None:
    r = client.post("/v1/plans", json={})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"code", "name", "amount_minor", "currency"}
    assert all(e["message"] == "is required" for e in r.json()["errors"])


def test_unknown_ids_are_404_with_the_field(client: TestClient) -> None:
    for url, field in [("/v1/plans/nope", "plan"), ("/v1/customers/cus_nope", "customer"),
                       ("/v1/payment-methods/pm_nope", "payment_method"), ("/v1/subscriptions/sub_nope", "subscription"),
                       ("/v1/invoices/in_nope", "invoice"), ("/v1/refunds/re_nope", "refund"),
                       ("/v1/payment-attempts/pay_nope", "attempt"), ("/v1/customers/cus_nope/payment-methods", "customer")]:
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.json()["field"] == field and r.json()["status"] == 404


def test_customer_is_found_by_id_or_external_ref(client: TestClient) -> None:
    cust = create_customer(client, "grace@example.com", external_ref="crm-7")
    assert client.get("/v1/customers/crm-7").json()["id"] == cust["id"]
    r = client.post("/v1/customers", json={"email": "other@example.com", "external_ref": "crm-7"})
    assert r.status_code == 409 and r.json()["field"] == "external_ref"


def test_customer_email_is_validated(client: TestClient) -> None:
    r = client.post("/v1/customers", json={"email": "not-an-email"})
    assert r.status_code == 422 and r.json()["field"] == "email"
    assert "not a valid e-mail address" in r.json()["detail"]


def test_customer_pages_follow_the_cursor(client: TestClient) -> None:
    ids = [create_customer(client, f"c{i}@example.com")["id"] for i in range(5)]
    first = client.get("/v1/customers?limit=2").json()
    assert [c["id"] for c in first["data"]] == ids[:2] and first["has_more"]
    second = client.get(f"/v1/customers?limit=2&after={first['next_cursor']}").json()
    third = client.get(f"/v1/customers?limit=2&after={second['next_cursor']}").json()
    assert [c["id"] for c in second["data"] + third["data"]] == ids[2:]
    assert third["has_more"] is False and third["next_cursor"] is None
    assert client.get("/v1/customers?email=c3@example.com").json()["data"][0]["id"] == ids[3]


def test_unknown_query_parameter_is_refused(client: TestClient) -> None:
    r = client.get("/v1/subscriptions?staus=active")
    assert r.status_code == 422 and r.json()["field"] == "staus"


def test_card_is_stored_with_its_consent(client: TestClient) -> None:
    cust = create_customer(client)
    pm = add_card(client, cust["id"], channel="phone")
    assert (pm["brand"], pm["last4"], pm["status"]) == ("visa", "4242", "active")
    [c] = pm["consents"]
    assert c["ip_address"] == "203.0.113.7" and c["channel"] == "phone" and len(c["terms_sha256"]) == 64
    listed = client.get(f"/v1/customers/{cust['id']}/payment-methods").json()["data"]
    assert [p["id"] for p in listed] == [pm["id"]]
    assert client.get(f"/v1/payment-methods/{pm['id']}").json()["consents"][0]["id"] == c["id"]


def test_card_number_is_refused(client: TestClient) -> None:
    cust = create_customer(client)
    r = client.post(f"/v1/customers/{cust['id']}/payment-methods",
                    json={"token": "4242 4242 4242 4242", "consent": consent()})
    assert r.status_code == 422 and r.json()["field"] == "token"
    assert "never accepts card numbers" in r.json()["detail"]
    assert client.get(f"/v1/customers/{cust['id']}/payment-methods").json()["data"] == []


def test_consent_errors_name_the_consent_field(client: TestClient) -> None:
    cust = create_customer(client)
    for patch, field in [({"ip_address": "not-an-ip"}, "consent.ip_address"),
                         ({"accepted_at": "2030-01-01T00:00:00Z"}, "consent.accepted_at"),
                         ({"accepted_at": "2026-01-01T00:00:00"}, "consent.accepted_at"),
                         ({"terms_text": None}, "consent.terms_text"),
                         ({"channel": "carrier-pigeon"}, "consent.channel")]:
        r = client.post(f"/v1/customers/{cust['id']}/payment-methods",
                        json={"token": "pm_card_visa", "consent": consent(**patch)})
        assert r.status_code == 422, (patch, r.text)
        assert r.json()["field"] == field, (patch, r.json())


def test_unknown_gateway_token_is_a_validation_error(client: TestClient) -> None:
    cust = create_customer(client)
    r = client.post(f"/v1/customers/{cust['id']}/payment-methods", json={"token": "tok_unknown", "consent": consent()})
    assert r.status_code == 422 and r.json()["field"] == "token"
    assert TERMS
