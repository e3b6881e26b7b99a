"""Subscriptions over the admin API: subscribe, cancel, undo, change card, list, cancel link."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Clock, add_card, create_customer, create_plan, subscribe


@pytest.fixture
def paid(client: TestClient) -> dict[str, object]:
    """An active subscription whose first period is paid."""
    create_plan(client)
    sub = subscribe(client)
    assert client.post("/v1/run-cycle", json={"send_emails": False}).json()["succeeded"] == 1
    return client.get(f"/v1/subscriptions/{sub['id']}").json()


def test_new_subscription_is_incomplete_with_first_charge_due_now(client: TestClient, clock: Clock) -> None:
    create_plan(client)
    sub = subscribe(client)
    assert sub["status"] == "incomplete" and sub["plan_code"] == "basic-monthly"
    assert (sub["amount_minor"], sub["currency"], sub["amount"]) == (1700, "USD", "17.00")
    assert sub["next_charge_at"] == clock.now.isoformat().replace("+00:00", "Z")


def test_subscription_show_includes_its_history(client: TestClient, paid: dict[str, object]) -> None:
    types = [e["type"] for e in paid["events"]]  # type: ignore[attr-defined]
    assert types[0] == "subscription.created" and "subscription.activated" in types
    assert paid["status"] == "active"


def test_subscribing_without_consent_covering_the_price_is_refused(client: TestClient) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"], amount_minor=900)  # agreed to 9.00, plan costs 17.00
    r = client.post("/v1/subscriptions", json={"customer": cust["id"], "plan": "basic-monthly", "payment_method": pm["id"]})
    assert r.status_code == 409
    assert r.json()["code"] == "consent_required" and r.json()["field"] == "payment_method"


def test_subscription_to_unknown_plan_is_404(client: TestClient) -> None:
    cust = create_customer(client)
    pm = add_card(client, cust["id"])
    r = client.post("/v1/subscriptions", json={"customer": cust["id"], "plan": "nope", "payment_method": pm["id"]})
    assert r.status_code == 404 and r.json()["field"] == "plan"


def test_naive_start_time_is_refused(client: TestClient) -> None:
    create_plan(client)
    cust = create_customer(client)
    pm = add_card(client, cust["id"])
    r = client.post("/v1/subscriptions", json={"customer": cust["id"], "plan": "basic-monthly",
                                               "payment_method": pm["id"], "start_at": "2026-01-20T00:00:00"})
    assert r.status_code == 422 and r.json()["field"] == "start_at"


def test_cancel_at_period_end_keeps_access_until_then(client: TestClient, paid: dict[str, object]) -> None:
    r = client.post(f"/v1/subscriptions/{paid['id']}/cancel", json={"reason": "too_expensive"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "active" and body["cancel_at_period_end"] is True
    assert body["cancellation_kind"] == "voluntary" and body["cancellation_reason"] == "too_expensive"
    assert body["effective_at"] == paid["current_period_end"] and body["changed"] is True
    assert body["canceled_by"] == "admin:api:token-1" and body["next_charge_at"] is None


def test_cancel_now_ends_access_and_second_cancel_is_409(client: TestClient, paid: dict[str, object]) -> None:
    r = client.post(f"/v1/subscriptions/{paid['id']}/cancel",
                    json={"kind": "involuntary", "reason": "dispute", "at_period_end": False})
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert r.json()["cancellation_kind"] == "involuntary"
    again = client.post(f"/v1/subscriptions/{paid['id']}/cancel", json={})
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition" and "already canceled" in again.json()["detail"]


def test_cancel_with_a_reason_that_does_not_fit_the_kind_names_the_field(client: TestClient,
                                                                        paid: dict[str, object]) -> None:
    r = client.post(f"/v1/subscriptions/{paid['id']}/cancel", json={"kind": "voluntary", "reason": "dispute"})
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = client.post(f"/v1/subscriptions/{paid['id']}/cancel", json={"kind": "sideways"})
    assert r.status_code == 422 and r.json()["field"] == "kind"
    assert client.get(f"/v1/subscriptions/{paid['id']}").json()["cancel_at_period_end"] is False


def test_undo_cancel_restores_renewal(client: TestClient, paid: dict[str, object]) -> None:
    client.post(f"/v1/subscriptions/{paid['id']}/cancel", json={})
    r = client.post(f"/v1/subscriptions/{paid['id']}/undo-cancel")
    assert r.status_code == 200
    assert r.json()["cancel_at_period_end"] is False and r.json()["next_charge_at"] == paid["current_period_end"]
    again = client.post(f"/v1/subscriptions/{paid['id']}/undo-cancel")
    assert again.status_code == 409 and "not canceled" in again.json()["detail"]


def test_change_payment_method_to_another_consented_card(client: TestClient, paid: dict[str, object]) -> None:
    new_pm = add_card(client, str(paid["customer_id"]), "pm_card_mastercard")
    r = client.post(f"/v1/subscriptions/{paid['id']}/payment-method", json={"payment_method": new_pm["id"]})
    assert r.status_code == 200 and r.json()["payment_method_id"] == new_pm["id"]
    other = create_customer(client, "eve@example.com")
    foreign = add_card(client, other["id"])
    r = client.post(f"/v1/subscriptions/{paid['id']}/payment-method", json={"payment_method": foreign["id"]})
    assert r.status_code == 409 and r.json()["field"] == "payment_method"


def test_subscription_list_filters_and_pages(client: TestClient) -> None:
    create_plan(client)
    create_plan(client, "other-plan")
    subs = [subscribe(client, email=f"s{i}@example.com", plan="other-plan" if i == 3 else "basic-monthly")
            for i in range(5)]
    client.post(f"/v1/subscriptions/{subs[0]['id']}/cancel", json={"at_period_end": False})
    page1 = client.get("/v1/subscriptions?limit=2").json()
    page2 = client.get(f"/v1/subscriptions?limit=2&after={page1['next_cursor']}").json()
    page3 = client.get(f"/v1/subscriptions?limit=2&after={page2['next_cursor']}").json()
    assert [s["id"] for s in page1["data"] + page2["data"] + page3["data"]] == [s["id"] for s in subs]
    assert page3["has_more"] is False
    assert [s["id"] for s in client.get("/v1/subscriptions?status=canceled").json()["data"]] == [subs[0]["id"]]
    assert [s["id"] for s in client.get("/v1/subscriptions?plan=other-plan").json()["data"]] == [subs[3]["id"]]
    by_customer = client.get(f"/v1/subscriptions?customer={subs[2]['customer_id']}").json()["data"]
    assert [s["id"] for s in by_customer] == [subs[2]["id"]]
    assert client.get("/v1/subscriptions?status=paused").json()["data"] == []  # a status since pauses exist
    bad = client.get("/v1/subscriptions?status=frozen")
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert client.get("/v1/subscriptions?limit=0").json()["field"] == "limit"


def test_cancel_link_is_signed_for_the_subscription(client: TestClient, paid: dict[str, object], clock: Clock) -> None:
    from billing_engine import links

    r = client.post(f"/v1/subscriptions/{paid['id']}/cancel-link")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["subscription_id"] == paid["id"]
    token = urlparse(body["url"]).path.rstrip("/").split("/")[-1]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert links.verify_cancel_token(settings, token, clock.now + timedelta(days=1)) == paid["id"]
    assert client.post("/v1/subscriptions/sub_nope/cancel-link").status_code == 404


def test_subscription_list_by_creation_and_update_ranges_with_other_filters(client: TestClient, clock: Clock) -> None:
    """The ranges combine with status, plan, customer and the cursor (each filter shape is a
    statement built once; its values are parameters, so a second call with other values must
    not see the first call's)."""
    create_plan(client)
    start = clock.now
    subs = []
    for i in range(4):  # created a day apart
        clock.now = start + timedelta(days=i)
        subs.append(subscribe(client, email=f"r{i}@example.com"))
    clock.now = start + timedelta(days=10)
    client.post(f"/v1/subscriptions/{subs[1]['id']}/cancel", json={"at_period_end": False})  # updated on day 10

    def ids(**params: str) -> list[str]:
        r = client.get("/v1/subscriptions", params=params)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["data"]]

    day = lambda n: (start + timedelta(days=n)).isoformat()  # noqa: E731
    assert ids(created_gte=day(1)) == [s["id"] for s in subs[1:]]
    assert ids(created_gte=day(1), created_lt=day(3)) == [subs[1]["id"], subs[2]["id"]]
    assert ids(created_gte=day(2), created_lt=day(4)) == [subs[2]["id"], subs[3]["id"]]  # same shape, other values
    assert ids(updated_gte=day(5)) == [subs[1]["id"]]
    assert ids(updated_lt=day(5), status="incomplete") == [subs[0]["id"], subs[2]["id"], subs[3]["id"]]
    assert ids(created_gte=day(1), status="incomplete", plan="basic-monthly") == [subs[2]["id"], subs[3]["id"]]
    assert ids(created_gte=day(0), customer=str(subs[3]["customer_id"])) == [subs[3]["id"]]
    assert ids(created_gte=day(0), limit="1", after=subs[1]["id"]) == [subs[2]["id"]]
    bad = client.get("/v1/subscriptions", params={"created_gte": day(3), "created_lt": day(1)})
    assert bad.status_code == 422 and bad.json()["field"] == "created_lt"


@pytest.mark.parametrize("path,foreign", [
    ("/v1/subscriptions", "garbage"), ("/v1/subscriptions", "cus_0123"), ("/v1/customers", "sub_0123"),
    ("/v1/invoices", "xyz"), ("/v1/refunds", "in_0123"), ("/v1/webhook_endpoints", "sub_0123"),
])
def test_a_cursor_that_is_not_an_id_of_the_list_is_422_naming_after(client: TestClient, path: str,
                                                                      foreign: str) -> None:
    """A mistyped cursor used to start the page somewhere arbitrary ("garbage" sorts before
    every sub_ id: the whole list again, without a word)."""
    create_plan(client)
    subscribe(client)
    r = client.get(path, params={"after": foreign})
    assert r.status_code == 422 and r.json()["field"] == "after", r.text
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path,params,field", [
    ("/v1/subscriptions", {"plan": "nope-monthly"}, "plan"),
    ("/v1/subscriptions", {"customer": "cus_NOSUCHCUSTOMER"}, "customer"),
    ("/v1/invoices", {"subscription": "sub_NOSUCHSUBSCRIPTION"}, "subscription"),
    ("/v1/invoices", {"customer": "cus_NOSUCHCUSTOMER"}, "customer"),
])
def test_a_list_filter_naming_nothing_that_exists_is_404_naming_it(client: TestClient, path: str,
                                                                   params: dict[str, str], field: str) -> None:
    """A mistyped plan code or id used to answer an empty page (200, has_more false): a
    finance export would end there, without a word."""
    create_plan(client)
    sub = subscribe(client)
    r = client.get(path, params=params)
    assert r.status_code == 404 and r.json()["field"] == field, r.text
    assert params[field] in r.json()["detail"]
    good = {"plan": "basic-monthly", "customer": sub["customer_id"], "subscription": sub["id"]}[field]
    ok = client.get(path, params={field: good})
    assert ok.status_code == 200, ok.text
    if path == "/v1/subscriptions":
        assert [s["id"] for s in ok.json()["data"]] == [sub["id"]]
