"""``/v1/events`` (cursor, type and created filters: catching up from the feed alone) and
``/v1/webhook_endpoints`` over the admin API."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import webhook_delivery
from billing_engine.models import Event
from billing_engine.settings import load_settings
from tests.api.conftest import Clock, create_customer, create_plan, subscribe
from tests.webhooks_out.receiver import Receiver


def _all_pages(client: TestClient, **params: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    after = None
    while True:
        q = {**params, "limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/events", params=q).json()
        out.extend(page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return out
        after = page["next_cursor"]


def test_a_merchant_catches_up_from_the_feed_alone(client: TestClient, clock: Clock) -> None:
    create_plan(client)
    sub = subscribe(client)
    assert client.post("/v1/run-cycle", json={"send_emails": False}).json()["succeeded"] == 1
    clock.now += timedelta(days=3)
    r = client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"reason": "too_expensive"})
    assert r.status_code == 200
    everything = _all_pages(client)
    types = [e["type"] for e in everything]
    assert types == ["customer.created", "subscription.created", "invoice.paid", "subscription.activated",
                     "subscription.canceled"]
    ids = [int(str(e["id"]).removeprefix("evt_")) for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    canceled = everything[-1]["data"]
    assert canceled == {"subscription_id": sub["id"], "customer_id": sub["customer_id"], "kind": "voluntary",
                        "reason": "too_expensive", "ends_at": canceled["ends_at"], "at_period_end": True}
    # only what changed since a cursor
    since = client.get("/v1/events", params={"after": everything[2]["id"]}).json()
    assert [e["type"] for e in since["data"]] == types[3:]
    # type filters (a list or a family) and created ranges
    subs_only = _all_pages(client, type="subscription.*")
    assert [e["type"] for e in subs_only] == ["subscription.created", "subscription.activated", "subscription.canceled"]
    two = client.get("/v1/events", params={"type": "invoice.paid,customer.created"}).json()
    assert [e["type"] for e in two["data"]] == ["customer.created", "invoice.paid"]
    later = client.get("/v1/events", params={"created_gte": (clock.now - timedelta(days=1)).isoformat()}).json()
    assert [e["type"] for e in later["data"]] == ["subscription.canceled"]
    before = client.get("/v1/events", params={"created_lt": (clock.now - timedelta(days=1)).isoformat()}).json()
    assert len(before["data"]) == 4
    one = client.get(f"/v1/events/{everything[2]['id']}").json()
    assert one == everything[2] and one["data"]["amount_minor"] == 1700 and one["data"]["currency"] == "USD"


def test_bad_feed_parameters_name_the_field(client: TestClient) -> None:
    for params, field in (({"type": "subscription.exploded"}, "type"), ({"after": "evt_x"}, "after"),
                          ({"created_gte": "yesterday"}, "created_gte")):
        r = client.get("/v1/events", params=params)
        assert r.status_code == 422 and r.json()["field"] == field, r.json()
    assert client.get("/v1/events/evt_99999").status_code == 404


def test_the_feed_needs_the_admin_token(anon: TestClient) -> None:
    assert anon.get("/v1/events").status_code == 401
    assert anon.get("/v1/webhook_endpoints").status_code == 401


def test_endpoints_over_the_api_and_a_signed_delivery(client: TestClient, engine: Engine) -> None:
    receiver = Receiver().start()
    try:
        r = client.post("/v1/webhook_endpoints", json={"url": receiver.url, "events": ["customer.created"]})
        assert r.status_code == 201, r.json()
        ep = r.json()
        assert ep["secret"].startswith("whsec_") and ep["events"] == ["customer.created"] and ep["status"] == "enabled"
        receiver.secrets.append(ep["secret"])
        listed = client.get("/v1/webhook_endpoints").json()
        assert [e["id"] for e in listed["data"]] == [ep["id"]] and listed["data"][0]["secret"] is None
        create_customer(client)
        report = webhook_delivery.deliver(engine, load_settings(), now=webhook_delivery.datetime.now(
            webhook_delivery.UTC))
        assert report.succeeded == 1 and receiver.types() == ["customer.created"]
        shown = client.get(f"/v1/webhook_endpoints/{ep['id']}").json()
        assert [d["status"] for d in shown["recent_deliveries"]] == ["succeeded"]
        # resend over the API: same event id again
        evt = receiver.received[0]["id"]
        assert client.post(f"/v1/events/{evt}/resend").json() == {"queued": 1}
        assert client.post("/v1/events/resend", json={"created_gte": "2020-01-01T00:00:00Z"}).json() == {"queued": 1}
        webhook_delivery.deliver(engine, load_settings(), now=webhook_delivery.datetime.now(webhook_delivery.UTC))
        assert [p["id"] for p in receiver.received] == [evt] * 3
        rotated = client.post(f"/v1/webhook_endpoints/{ep['id']}/rotate-secret", json={"grace_hours": 1}).json()
        assert rotated["secret"] != ep["secret"] and rotated["previous_secret_expires_at"]
        assert client.post(f"/v1/webhook_endpoints/{ep['id']}/disable").json()["status"] == "disabled"
        assert client.post(f"/v1/webhook_endpoints/{ep['id']}/enable").json()["status"] == "enabled"
        patched = client.patch(f"/v1/webhook_endpoints/{ep['id']}", json={"events": ["invoice.*"]}).json()
        assert patched["events"] == ["invoice.paid", "invoice.payment_failed", "invoice.uncollectible"]
        with Session(engine) as s:
            trail = list(s.exec(select(Event).where(col(Event.type).startswith("webhook_endpoint."))
                                .order_by(col(Event.id))))
        assert [e.type for e in trail] == ["webhook_endpoint.created", "webhook_endpoint.secret_rotated",
                                           "webhook_endpoint.disabled", "webhook_endpoint.enabled",
                                           "webhook_endpoint.updated"]
        assert all(e.actor.startswith("admin:api:") for e in trail)
        assert not any(ep["secret"] in e.payload or rotated["secret"] in e.payload for e in trail)
        assert client.get("/v1/events", params={"type": "customer.created"}).json()["data"]
        assert all(not e["type"].startswith("webhook_endpoint") for e in client.get("/v1/events").json()["data"])
    finally:
        receiver.stop()


def test_bad_endpoint_input_is_a_422_naming_the_field(client: TestClient) -> None:
    for body, field in (({"url": "nope"}, "url"), ({"url": "https://x.example/h", "events": ["nope"]}, "events"),
                        ({"url": "https://x.example/h", "extra": 1}, "extra")):
        r = client.post("/v1/webhook_endpoints", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, r.json()
    assert client.post("/v1/webhook_endpoints/we_nope/disable").status_code == 404
    assert client.post("/v1/events/resend", json={}).json()["field"] == "created_gte"


def test_lists_filter_by_created_and_updated_ranges_with_cursors(client: TestClient, clock: Clock) -> None:
    create_plan(client)
    old = subscribe(client)
    clock.now += timedelta(days=2)
    new = subscribe(client, email="bea@example.com")
    clock.now += timedelta(days=2)
    assert client.post(f"/v1/subscriptions/{old['id']}/cancel", json={"at_period_end": False}).status_code == 200
    cut = (clock.now - timedelta(days=1)).isoformat()
    changed = client.get("/v1/subscriptions", params={"updated_gte": cut}).json()
    assert [s["id"] for s in changed["data"]] == [old["id"]] and changed["data"][0]["updated_at"]
    created = client.get("/v1/subscriptions", params={"created_gte": (clock.now - timedelta(days=3)).isoformat()})
    assert [s["id"] for s in created.json()["data"]] == [new["id"]]
    assert [s["id"] for s in client.get("/v1/subscriptions", params={"status": "canceled", "updated_lt": cut}
                                        ).json()["data"]] == []
    custs = client.get("/v1/customers", params={"created_lt": cut, "limit": 1}).json()
    assert len(custs["data"]) == 1 and custs["has_more"] and custs["next_cursor"]
    inv = client.get("/v1/invoices", params={"updated_gte": cut}).json()
    assert all(i["updated_at"] >= cut.replace("+00:00", "Z") for i in inv["data"])
    bad = client.get("/v1/subscriptions", params={"updated_gte": cut, "updated_lt": cut})
    assert bad.status_code == 422 and bad.json()["field"] == "updated_lt"
    assert client.get("/v1/invoices", params={"created_gte": "soon"}).json()["field"] == "created_gte"
