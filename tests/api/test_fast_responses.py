"""The subscription list and show answer exactly what the pydantic response models did.

Both endpoints now read plain rows in a fixed number of queries and serialise their
response model once (:mod:`api.fastjson`) instead of letting FastAPI validate and
serialise it again. The oracle here is the previous path: the ORM ``summary`` of each
subscription through ``SubscriptionOut`` / ``SubscriptionDetail``, serialised the way
FastAPI serialises a ``response_model`` -- compared byte for byte, over subscriptions in
every state the summary distinguishes (active with a coupon and a scheduled price change,
past due with an open invoice, paused with a resume date, cancelling at period end,
canceled, trialing, incomplete, a plan change at period end, metadata).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api import presenters as P
from api.schemas import Page, SubscriptionDetail, SubscriptionOut
from billing_engine import subscriptions
from tests.api.conftest import Clock, add_card, create_plan, subscribe

DECLINES = "pm_card_chargeDeclinedInsufficientFunds"


def _ok(r: Any, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def zoo(client: TestClient, clock: Clock) -> dict[str, str]:
    """Subscriptions in every state the summary tells apart; returns name -> id."""
    create_plan(client)
    create_plan(client, "pro-monthly", name="Pro")
    create_plan(client, "trial-monthly", trial_days=14)
    _ok(client.post("/v1/coupons", json={"code": "TWENTY", "percent_off": 20, "duration": "forever"}), 201)
    ids = {
        "coupon": subscribe(client, email="a@example.com", metadata={"crm": "42"})["id"],
        "past_due": subscribe(client, email="b@example.com")["id"],
        "paused": subscribe(client, email="c@example.com")["id"],
        "cancelling": subscribe(client, email="d@example.com")["id"],
        "canceled": subscribe(client, email="e@example.com")["id"],
        "downgrade": subscribe(client, plan="pro-monthly", email="f@example.com")["id"],
    }
    _ok(client.post("/v1/run-cycle", json={"send_emails": False}))
    _ok(client.post(f"/v1/subscriptions/{ids['coupon']}/coupon", json={"coupon": "TWENTY"}))
    bad = add_card(client, _ok(client.get(f"/v1/subscriptions/{ids['past_due']}"))["customer_id"], DECLINES)
    _ok(client.post(f"/v1/subscriptions/{ids['past_due']}/payment-method", json={"payment_method": bad["id"]}))
    _ok(client.post(f"/v1/subscriptions/{ids['paused']}/pause",
                    json={"resumes_at": (clock.now + timedelta(days=60)).isoformat()}))
    _ok(client.post(f"/v1/subscriptions/{ids['cancelling']}/cancel",
                    json={"kind": "voluntary", "reason": "too_expensive", "at_period_end": True}))
    _ok(client.post(f"/v1/subscriptions/{ids['canceled']}/cancel",
                    json={"kind": "voluntary", "reason": "unused", "at_period_end": False}))
    clock.now += timedelta(days=24)  # the renewal reminders (the charge waits for them)
    _ok(client.post("/v1/run-cycle", json={"send_emails": False, "at": clock.now.isoformat()}))
    clock.now += timedelta(days=8)  # the renewal of every live one; the past-due one is declined
    _ok(client.post("/v1/run-cycle", json={"send_emails": False, "at": clock.now.isoformat()}))
    _ok(client.post(f"/v1/subscriptions/{ids['downgrade']}/plan-change",
                    json={"plan": "basic-monthly", "when": "period_end"}))
    _ok(client.post("/v1/plans/basic-monthly/reprice", json={"amount_minor": 1900, "notice_days": 7}), 201)
    ids["trialing"] = subscribe(client, plan="trial-monthly", email="g@example.com")["id"]
    ids["incomplete"] = subscribe(client, plan="pro-monthly", email="h@example.com")["id"]
    return ids


def _oracle(engine: Engine, sub_id: str, detail: bool = False) -> Any:
    with Session(engine) as s:
        sub = subscriptions.get(s, sub_id)
        return P.subscription_detail(s, sub) if detail else P.subscription(s, sub)


def test_the_states_are_all_there(client: TestClient, zoo: dict[str, str]) -> None:
    got = {name: _ok(client.get(f"/v1/subscriptions/{i}")) for name, i in zoo.items()}
    assert got["past_due"]["status"] == "past_due" and got["past_due"]["next_retry_at"] is not None
    assert got["paused"]["status"] == "paused" and got["paused"]["next_charge_at"] is not None
    assert got["cancelling"]["cancellation_reason"] == "too_expensive" and got["canceled"]["status"] == "canceled"
    assert got["trialing"]["status"] == "trialing" and got["incomplete"]["status"] == "incomplete"
    assert got["downgrade"]["scheduled_plan_id"] is not None
    assert got["coupon"]["metadata"] == {"crm": "42"}
    assert got["coupon"]["next_charge_amount_minor"] == 1900 * 80 // 100  # the new price, less the coupon


def test_list_pages_are_byte_for_byte_what_the_response_model_sent(
        client: TestClient, engine: Engine, zoo: dict[str, str]) -> None:
    adapter = TypeAdapter(Page[SubscriptionOut])
    seen: list[str] = []
    after: str | None = None
    while True:
        r = client.get("/v1/subscriptions", params={"limit": 3} | ({"after": after} if after else {}))
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        expected = Page[SubscriptionOut](data=[_oracle(engine, item["id"]) for item in body["data"]],
                                         has_more=body["has_more"], next_cursor=body["next_cursor"])
        assert r.content == adapter.dump_json(expected, by_alias=True)
        seen += [item["id"] for item in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        assert body["next_cursor"] == seen[-1]
        after = body["next_cursor"]
    assert sorted(seen) == seen and set(seen) == set(zoo.values())
    filtered = _ok(client.get("/v1/subscriptions", params={"status": "past_due"}))
    assert [s["id"] for s in filtered["data"]] == [zoo["past_due"]]


def test_show_is_byte_for_byte_what_the_response_model_sent(
        client: TestClient, engine: Engine, zoo: dict[str, str]) -> None:
    adapter = TypeAdapter(SubscriptionDetail)
    for sub_id in zoo.values():
        r = client.get(f"/v1/subscriptions/{sub_id}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.content == adapter.dump_json(_oracle(engine, sub_id, detail=True), by_alias=True)


def test_unknown_subscription_and_bad_filters_answer_as_before(client: TestClient, zoo: dict[str, str]) -> None:
    r = client.get("/v1/subscriptions/sub_nope")
    assert r.status_code == 404 and r.json()["field"] == "subscription" and "sub_nope" in r.json()["detail"]
    r = client.get("/v1/subscriptions", params={"status": "sleeping"})
    assert r.status_code == 422 and r.json()["field"] == "status"
    r = client.get("/v1/subscriptions", params={"limit": 0})
    assert r.status_code == 422 and r.json()["field"] == "limit"


def test_a_page_costs_the_same_queries_whatever_its_size(
        client: TestClient, engine: Engine, zoo: dict[str, str]) -> None:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def queries(limit: int) -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(_ok(client.get("/v1/subscriptions", params={"limit": limit}))["data"]) == min(limit, len(zoo))
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    small, big = queries(1), queries(100)  # the big page has every state, the past-due one too
    assert big <= small + 1, statements  # + the open invoices of past-due rows, once per page
    assert big <= 8, statements
