"""Outgoing webhooks end to end: a real receiver on 127.0.0.1 verifies every delivery with
the ``standardwebhooks`` package."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import cancellations, event_feed, subscriptions, webhook_delivery, webhook_endpoints
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, WebhookDelivery, WebhookEndpoint
from billing_engine.settings import Settings, load_settings
from tests.factories import make_customer, make_subscription
from tests.webhooks_out.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(admin_email="ops@example.com", mail_transport="file", mail_dir=str(tmp_path / "mail"))


def _endpoint(engine: Engine, receiver: Receiver, settings: Settings, now: datetime, events: str | None = None) -> str:
    with transaction(engine) as s:
        ep = webhook_endpoints.create(s, url=receiver.url, event_types=events, settings=settings, now=now)
        receiver.secrets.append(ep.secret)
        return ep.id


def _wall() -> datetime:
    return datetime.now(UTC)


def test_a_renewal_reaches_the_merchant_signed_and_in_order(engine: Engine, receiver: Receiver,
                                                             settings: Settings, now: datetime) -> None:
    _endpoint(engine, receiver, settings, now)
    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=settings)
    report = webhook_delivery.deliver(engine, settings, now=_wall())
    assert receiver.rejected == 0
    assert receiver.types() == ["customer.created", "subscription.created", "invoice.paid", "subscription.activated"]
    ids = [int(p["id"].removeprefix("evt_")) for p in receiver.received]
    assert ids == sorted(ids)
    assert [h["webhook-id"] for h in receiver.headers] == [p["id"] for p in receiver.received]
    paid = receiver.received[2]["data"]
    assert paid["subscription_id"] == sub_id and paid["amount_minor"] == 1700 and paid["currency"] == "USD"
    assert paid["period_start"].endswith("+00:00")
    assert report.succeeded == 4
    # a second pass sends nothing again
    assert webhook_delivery.deliver(engine, settings, now=_wall()).succeeded == 0
    assert len(receiver.received) == 4


def test_the_delivery_body_is_the_feed_entry(engine: Engine, receiver: Receiver, settings: Settings,
                                             now: datetime) -> None:
    _endpoint(engine, receiver, settings, now)
    with transaction(engine) as s:
        make_customer(s, now)
    webhook_delivery.deliver(engine, settings, now=_wall())
    with Session(engine) as s:
        feed = event_feed.present_many(s, event_feed.list_events(s))
    assert receiver.received == feed


def test_nothing_is_sent_for_a_rolled_back_transaction(engine: Engine, receiver: Receiver, settings: Settings,
                                                       now: datetime) -> None:
    _endpoint(engine, receiver, settings, now)
    with pytest.raises(RuntimeError), transaction(engine) as s:
        make_customer(s, now, email="ghost@example.com")
        raise RuntimeError("the request failed after the customer was added")
    with transaction(engine) as s:
        make_customer(s, now, email="real@example.com")
    webhook_delivery.deliver(engine, settings, now=_wall())
    assert [p["data"]["email"] for p in receiver.received] == ["real@example.com"]


def test_a_cancellation_sends_kind_and_reason_then_the_end(engine: Engine, receiver: Receiver,
                                                           settings: Settings, now: datetime) -> None:
    with transaction(engine) as s:
        sub_id = make_subscription(s, now).id
    run_cycle(engine, FakeGateway(), now=now, settings=settings)
    _endpoint(engine, receiver, settings, now, events="subscription.*")
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), reason="too_expensive", at_period_end=False,
                             now=now + timedelta(days=3))
    webhook_delivery.deliver(engine, settings, now=_wall())
    assert receiver.types() == ["subscription.canceled", "subscription.ended"]
    canceled, ended = (p["data"] for p in receiver.received)
    assert (canceled["kind"], canceled["reason"], canceled["at_period_end"]) == ("voluntary", "too_expensive", False)
    assert ended["status"] == "canceled" and ended["kind"] == "voluntary"


def test_deliveries_survive_a_receiver_that_is_down_for_a_while(engine: Engine, receiver: Receiver,
                                                                settings: Settings, now: datetime) -> None:
    _endpoint(engine, receiver, settings, now)
    receiver.stop()
    with transaction(engine) as s:
        make_customer(s, now, email="a@example.com")
        make_customer(s, now, email="b@example.com")
    t0 = _wall()
    first = webhook_delivery.deliver(engine, settings, now=t0)
    assert first.succeeded == 0 and first.failed_attempts == 1  # the second waits: one timeout per pass
    assert webhook_delivery.deliver(engine, settings, now=t0 + timedelta(seconds=30)).failed_attempts == 0
    # still down at the next retries
    t = t0 + timedelta(minutes=1)
    assert webhook_delivery.deliver(engine, settings, now=t).failed_attempts == 1
    receiver.start()  # back, same port, hours later
    t += timedelta(hours=1)
    webhook_delivery.deliver(engine, settings, now=t)
    assert sorted(p["data"]["email"] for p in receiver.received) == ["a@example.com", "b@example.com"]
    with Session(engine) as s:
        rows = list(s.exec(select(WebhookDelivery)))
        assert {d.status for d in rows} == {"succeeded"}
        assert max(d.attempts for d in rows) == 3
        assert s.exec(select(WebhookEndpoint)).one().failing_since is None


def test_a_failing_endpoint_is_disabled_after_the_retry_window_and_the_admin_is_told(
        engine: Engine, receiver: Receiver, settings: Settings, now: datetime, tmp_path: Path) -> None:
    ep_id = _endpoint(engine, receiver, settings, now)
    receiver.status = 500
    with transaction(engine) as s:
        make_customer(s, now)
    t0 = t = _wall()
    tries = 0
    while True:
        report = webhook_delivery.deliver(engine, settings, now=t)
        tries += report.failed_attempts
        with Session(engine) as s:
            d = s.exec(select(WebhookDelivery)).one()
        if d.status == "failed":
            break
        assert d.status == "pending" and tries < 50
        t = d.next_attempt_at
    assert tries == webhook_delivery.MAX_ATTEMPTS
    assert t - t0 >= timedelta(days=3)
    assert report.disabled == [ep_id]
    with Session(engine) as s:
        ep = s.get(WebhookEndpoint, ep_id)
        assert ep is not None and ep.status == "disabled" and "HTTP 500" in (ep.disabled_reason or "")
        assert s.exec(select(Event).where(Event.type == "webhook_endpoint.disabled")).one()
    mails = list((tmp_path / "mail").glob("*.eml"))
    assert len(mails) == 1
    text = mails[0].read_text()
    assert "ops@example.com" in text and ep_id in text
    # a disabled endpoint gets nothing; enabled again + resend: delivered
    receiver.status = 200
    with transaction(engine) as s:
        make_customer(s, now, email="later@example.com")
    webhook_delivery.deliver(engine, settings, now=t + timedelta(hours=1))
    assert receiver.received == []
    with transaction(engine) as s:
        webhook_endpoints.enable(s, webhook_endpoints.get(s, ep_id), now=t)
    webhook_delivery.resend(engine, now=t, created_gte=now - timedelta(days=1), created_lt=now + timedelta(days=1),
                            endpoint_id=ep_id)
    webhook_delivery.deliver(engine, settings, now=t + timedelta(hours=2))
    emails = [p["data"]["email"] for p in receiver.received]
    assert sorted(set(emails)) == ["ada@example.com", "later@example.com"]


def test_any_event_can_be_resent_however_old(engine: Engine, receiver: Receiver, settings: Settings,
                                             now: datetime) -> None:
    with transaction(engine) as s:
        make_customer(s, now - timedelta(days=400), email="old@example.com")
    ep_id = _endpoint(engine, receiver, settings, now)
    webhook_delivery.deliver(engine, settings, now=_wall())
    assert receiver.received == []  # registered after the event
    with Session(engine) as s:
        ev = s.exec(select(Event).where(Event.type == "customer.created")).one()
        assert ev.id is not None
    assert webhook_delivery.resend(engine, now=_wall(), event_id=ev.id) == 1
    assert webhook_delivery.resend(engine, now=_wall(), event_id=ev.id, endpoint_id=ep_id) == 1
    webhook_delivery.deliver(engine, settings, now=_wall())
    assert [p["id"] for p in receiver.received] == [f"evt_{ev.id}"] * 2
    assert [h["webhook-id"] for h in receiver.headers] == [f"evt_{ev.id}"] * 2


def test_a_rotated_secret_keeps_signing_during_the_grace_period(engine: Engine, settings: Settings,
                                                                now: datetime) -> None:
    old_only = Receiver().start()
    try:
        ep_id = _endpoint(engine, old_only, settings, now)
        t = _wall()
        with transaction(engine) as s:
            ep = webhook_endpoints.rotate_secret(s, webhook_endpoints.get(s, ep_id), now=t, grace=timedelta(hours=24))
            new_secret = ep.secret
        assert new_secret.startswith("whsec_") and new_secret != old_only.secrets[0]
        with transaction(engine) as s:
            make_customer(s, now, email="during@example.com")
        webhook_delivery.deliver(engine, settings, now=t + timedelta(hours=1))
        assert [p["data"]["email"] for p in old_only.received] == ["during@example.com"]
        with transaction(engine) as s:
            make_customer(s, now, email="after@example.com")
        webhook_delivery.deliver(engine, settings, now=t + timedelta(hours=25))
        assert old_only.rejected == 1  # the old secret no longer signs
        old_only.secrets = [new_secret]
        webhook_delivery.deliver(engine, settings, now=t + timedelta(hours=26))
        assert [p["data"]["email"] for p in old_only.received] == ["during@example.com", "after@example.com"]
    finally:
        old_only.stop()


def test_production_refuses_plain_http_and_private_addresses(now: datetime) -> None:
    prod = load_settings(env="production")
    for url in ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.0.0.8/x", "https://localhost/x",
                "ftp://example.com/x", "https://user:pw@example.com/x"):
        with pytest.raises(ValidationError) as err:
            webhook_endpoints.check_url(url, prod)
        assert err.value.field == "url"
    assert webhook_endpoints.check_url("https://hooks.example.com/x", prod) == "https://hooks.example.com/x"
    allowed = load_settings(env="production", webhook_allow_insecure_urls=True)
    assert webhook_endpoints.check_url("http://127.0.0.1:9/x", allowed)
    assert webhook_endpoints.check_url("http://127.0.0.1:9/x", load_settings(env="test"))


def test_a_pass_with_nothing_to_send_opens_no_http_client(engine: Engine, receiver: Receiver, settings: Settings,
                                                          now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run-cycle ends with a delivery pass; one with nothing due builds no HTTP
    client (an SSL context and a pool: tens of ms of CPU per run). One with work does."""
    built: list[object] = []
    real = webhook_delivery.httpx.Client

    def counting(*a: object, **kw: object) -> object:
        built.append(1)
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(webhook_delivery.httpx, "Client", counting)
    assert webhook_delivery.deliver(engine, settings, now=_wall()).succeeded == 0
    assert built == []
    _endpoint(engine, receiver, settings, now)
    with transaction(engine) as s:
        make_customer(s, now)
    assert webhook_delivery.deliver(engine, settings, now=_wall()).succeeded == 1
    assert built == [1] and receiver.types() == ["customer.created"]
