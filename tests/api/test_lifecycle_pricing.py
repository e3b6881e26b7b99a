"""Lifecycle pricing over the admin API: reprice with notice, coupons, pause / resume."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from tests.api.conftest import Clock, create_plan, subscribe


def _cycle(client: TestClient) -> dict[str, object]:
    r = client.post("/v1/run-cycle", json={"send_emails": False})
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def test_reprice_coupon_pause_and_resume_over_the_api(client: TestClient, clock: Clock) -> None:
    create_plan(client)
    r = client.post("/v1/coupons", json={"code": "spring10", "percent_off": 10, "duration": "repeating",
                                         "duration_periods": 2, "plans": ["basic-monthly"]})
    assert r.status_code == 201, r.text
    assert r.json()["code"] == "SPRING10"
    sub = subscribe(client, coupon="spring10")
    assert sub["next_charge_amount_minor"] == 1530
    assert _cycle(client)["succeeded"] == 1

    clock.now += timedelta(days=1)
    r = client.post("/v1/plans/basic-monthly/reprice", json={"amount_minor": 2000, "notice_days": 7})
    assert r.status_code == 201, r.text
    assert (r.json()["old_amount_minor"], r.json()["subscribers_notified"]) == (1700, 1)
    history = client.get("/v1/plans/basic-monthly/price-changes").json()["data"]
    assert [c["amount_minor"] for c in history] == [2000]

    r = client.post(f"/v1/subscriptions/{sub['id']}/pause", json={"at_period_end": True})
    assert r.status_code == 200 and r.json()["pause_at_period_end"] is True
    clock.now += timedelta(days=32)
    assert _cycle(client)["paused"] == 1
    assert client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "paused"
    clock.now += timedelta(days=40)
    assert _cycle(client)["charged"] == 0
    r = client.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert _cycle(client)["succeeded"] == 1
    invoices = client.get("/v1/invoices", params={"subscription": sub["id"]}).json()["data"]
    # 17.00 - 10 %, then (resumed, new price in force) 20.00 - 10 %
    assert [(i["amount_minor"], i["discount_minor"], i["gross_minor"]) for i in invoices] == [
        (1530, 170, 1700), (1800, 200, 2000)]


def test_bad_lifecycle_input_names_the_field_and_changes_nothing(client: TestClient) -> None:
    create_plan(client)
    sub = subscribe(client)
    r = client.post("/v1/plans/basic-monthly/reprice", json={"amount_minor": 2000, "notice_days": 3})
    assert r.status_code == 422 and r.json()["field"] == "notice_days"
    r = client.post("/v1/plans/basic-monthly/reprice", json={"amount_minor": "20"})
    assert r.status_code == 422
    r = client.post("/v1/coupons", json={"code": "X", "percent_off": 10, "amount_off_minor": 100, "currency": "USD"})
    assert r.status_code == 422 and r.json()["field"] == "percent_off"
    r = client.post("/v1/coupons", json={"code": "BIG", "percent_off": 80})
    assert r.status_code == 201
    r = client.post(f"/v1/subscriptions/{sub['id']}/coupon", json={"coupon": "BIG"})
    assert r.status_code == 409 and r.json()["field"] == "coupon" and "cap" in r.json()["detail"]
    r = client.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert r.status_code == 409 and r.json()["field"] == "subscription"
    r = client.post("/v1/subscriptions/sub_nope/pause", json={})
    assert r.status_code == 404
    r = client.post(f"/v1/subscriptions/{sub['id']}/pause", json={"resumes_at": "2000-01-01T00:00:00Z"})
    assert r.status_code == 422 and r.json()["field"] == "resumes_at"
    assert client.get("/v1/plans/basic-monthly/price-changes").json()["data"] == []
    assert client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "incomplete"
