"""The self-service page's lifecycle actions: pause / resume (only on a plan that allows it),
the money-back guarantee, subscribing again after the end, and accepting a new price.
Each: a POST, a confirmation, an event (+ e-mail where the admin path sends one), the
money in the fake gateway's ledger, and a page (never a 500) for bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from billing_engine import cancellations, edits, links, pricing, reactivations
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Consent, Event, Notification, Plan, Subscription
from billing_engine.settings import Settings, load_settings
from tests.factories import Clock, make_plan, make_subscription

BASE = "https://news.example"
IP = "203.0.113.9"


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="self-service-" + "s" * 30, public_base_url=BASE, company_name="The Weekly",
                         seller_name="Weekly Media GmbH")


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now + timedelta(days=3))  # Jan 18


@pytest.fixture
def client(engine: Engine, settings: Settings, gateway: FakeGateway, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=(IP, 50000),
                    headers={"User-Agent": "Mozilla/5.0 (self-service test)"}) as c:
        yield c


def _paid(engine: Engine, now: datetime, settings: Settings, gateway: FakeGateway, *, pause: bool = False,
          guarantee_days: int | None = None) -> Subscription:
    """A Basic Monthly (17.00 USD) subscriber charged on Jan 15."""
    with transaction(engine) as s:
        plan = make_plan(s, now)
        edits.update_plan(s, plan.code, now=now, customer_can_pause=pause, guarantee_days=guarantee_days)
        sub_id = make_subscription(s, now, plan=plan).id
    assert run_cycle(engine, gateway, now=now, settings=settings).succeeded == 1
    return _sub(engine, sub_id)


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        return s.get_one(Subscription, sub_id)


def _path(settings: Settings, customer_id: str, at: datetime) -> str:
    return links.make_account_url(settings, customer_id, at).removeprefix(BASE)


def _events(engine: Engine, sub_id: str) -> list[tuple[str, str]]:
    with Session(engine) as s:
        return [(e.type, e.actor) for e in s.exec(select(Event).where(Event.subscription_id == sub_id)
                                                  .order_by(col(Event.id)))]


def _mails(engine: Engine, kind: str) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).where(Notification.kind == kind)))


def _done(client: TestClient, r: object, expected: str) -> str:
    assert r.status_code == 303, r.text  # type: ignore[attr-defined]
    location = r.headers["location"]  # type: ignore[attr-defined]
    assert location.endswith(f"?done={expected}")
    page = client.get(location)
    assert page.status_code == 200
    return str(page.text)


# --------------------------------------------------------------------------- pause / resume


def test_a_plan_without_customer_pause_offers_no_pause_and_refuses_one(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    path = _path(settings, sub.customer_id, clock.at)
    assert "Pause subscription" not in client.get(path).text
    before = _events(engine, sub.id)
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "now"})
    assert r.status_code == 409 and "This subscription cannot be paused from this page." in r.text
    assert _sub(engine, sub.id).status == "active" and _events(engine, sub.id) == before


def test_pause_at_period_end_until_a_date_then_take_it_back_then_pause_now_and_resume(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, pause=True)
    path = _path(settings, sub.customer_id, clock.at)
    assert "Pause subscription" in client.get(path).text
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "period_end", "until": "2026-04-01"})
    html = _done(client, r, "pause_scheduled")
    assert "Pauses on February 15, 2026, until April 1, 2026" in html
    got = _sub(engine, sub.id)
    assert (got.status, got.pause_at_period_end, got.resumes_at) == \
        ("active", True, datetime(2026, 4, 1, tzinfo=UTC))
    assert _events(engine, sub.id)[-1] == ("subscription.pause_scheduled", "customer")

    html = _done(client, client.post(f"{path}/subscriptions/{sub.id}/resume"), "resumed")
    got = _sub(engine, sub.id)
    assert (got.pause_at_period_end, got.resumes_at) == (False, None)
    assert "February 15, 2026: $17.00" in html  # the next charge is back

    html = _done(client, client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "now"}), "paused")
    assert "Paused until you resume it" in html and "Resume my subscription" in html
    assert _sub(engine, sub.id).status == "paused"
    assert len(_mails(engine, "subscription_paused")) == 1
    n = len(_events(engine, sub.id))
    _done(client, client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "now"}), "paused")  # again
    assert len(_events(engine, sub.id)) == n  # a repeated click changes nothing

    _done(client, client.post(f"{path}/subscriptions/{sub.id}/resume"), "resumed")
    got = _sub(engine, sub.id)
    assert (got.status, got.current_period_end) == ("active", datetime(2026, 2, 15, 9, tzinfo=UTC))  # unchanged
    assert _events(engine, sub.id)[-1] == ("subscription.resumed", "customer")
    [resumed] = _mails(engine, "subscription_resumed")
    assert json.loads(resumed.payload)["amount_minor"] == 1700
    assert [e.amount_minor for e in gateway.ledger] == [1700]  # no money moved by any of it


@pytest.mark.parametrize("form", [
    {"when": "now", "until": "tomorrow"},
    {"when": "now", "until": "2025-12-01"},  # before the pause starts
    {"when": "soon"},
    {"when": "now", "until": "9" * 300},
])
def test_bad_pause_input_is_a_page_that_names_the_problem_and_changes_nothing(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    form: dict[str, str],
) -> None:
    sub = _paid(engine, now, settings, gateway, pause=True)
    path = _path(settings, sub.customer_id, clock.at)
    before = _events(engine, sub.id)
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data=form)
    assert r.status_code == 422 and 'role="alert"' in r.text
    assert _sub(engine, sub.id).status == "active" and _events(engine, sub.id) == before


def test_bad_or_expired_tokens_and_unknown_subscriptions_never_act(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, pause=True, guarantee_days=30)
    path = _path(settings, sub.customer_id, clock.at)
    old = _path(settings, sub.customer_id, clock.at - timedelta(days=settings.cancel_link_max_age_days + 1))
    for action in ("pause", "resume", "guarantee", "reactivate", "accept-price"):
        assert client.post(f"{path[:-3]}abc/subscriptions/{sub.id}/{action}").status_code == 404
        r = client.post(f"{old}/subscriptions/{sub.id}/{action}")
        assert r.status_code == 400 and "expired" in r.text
        assert client.post(f"{path}/subscriptions/sub_nope/{action}").status_code == 404
    assert _sub(engine, sub.id).status == "active" and [e.kind for e in gateway.ledger] == ["charge"]


# --------------------------------------------------------------------------- guarantee


def test_the_guarantee_refund_inside_the_window_and_nothing_offered_outside(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, guarantee_days=30)
    path = _path(settings, sub.customer_id, clock.at)
    html = client.get(path).text
    assert "30-day money-back guarantee: until February 14, 2026 you can ask for a full refund of $17.00" in html
    html = _done(client, client.post(f"{path}/subscriptions/{sub.id}/guarantee"), "refunded")
    assert "Request my money back" not in html
    assert [(e.kind, e.amount_minor) for e in gateway.ledger] == [("charge", 1700), ("refund", 1700)]
    got = _sub(engine, sub.id)
    assert (got.status, got.cancellation_kind) == ("canceled", "voluntary")
    assert ("refund.guarantee_granted", "customer") in _events(engine, sub.id)
    assert len(_mails(engine, "refund")) == 1
    r = client.post(f"{path}/subscriptions/{sub.id}/guarantee")  # again: refused, nothing moves
    assert r.status_code == 409 and len(gateway.ledger) == 2


def test_outside_the_guarantee_window_the_page_says_why_and_a_post_moves_no_money(
    engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    sub = _paid(engine, now, settings, gateway, guarantee_days=30)
    late = Clock(now + timedelta(days=31))
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=late)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=(IP, 50000)) as c:
        path = _path(settings, sub.customer_id, late.at)
        html = c.get(path).text
        assert "The 30-day money-back guarantee ended on February 14, 2026" in html
        assert "Request my money back" not in html
        r = c.post(f"{path}/subscriptions/{sub.id}/guarantee")
        assert r.status_code == 409 and "guarantee ended" in r.text
    assert [e.kind for e in gateway.ledger] == ["charge"] and _sub(engine, sub.id).status == "active"


# --------------------------------------------------------------------------- reactivation


def _ended(engine: Engine, now: datetime, settings: Settings, gateway: FakeGateway) -> Subscription:
    sub = _paid(engine, now, settings, gateway)
    with transaction(engine) as s:
        cancellations.cancel(s, s.get_one(Subscription, sub.id), now=now + timedelta(days=1))
    assert run_cycle(engine, gateway, now=datetime(2026, 2, 16, tzinfo=UTC), settings=settings) \
        .cancellations_effective == 1
    return _sub(engine, sub.id)


def test_subscribe_again_records_the_consent_charges_once_and_links_the_old_subscription(
    engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    old = _ended(engine, now, settings, gateway)
    mar1 = Clock(datetime(2026, 3, 1, 10, tzinfo=UTC))
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=mar1)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=(IP, 50000),
                    headers={"User-Agent": "UA-test"}) as c:
        path = _path(settings, old.customer_id, mar1.at)
        html = c.get(path).text
        terms = ("I subscribe again to Basic Monthly and authorise Weekly Media GmbH to charge my Visa ending 4242 "
                 "(expires 12/2034) $17.00 now and every month after that, until I cancel.")
        assert terms in html and "Subscribe again" in html
        page = _done(c, c.post(f"{path}/subscriptions/{old.id}/reactivate"), "reactivated")
        assert "Welcome back!" in page and "Subscribe again" not in page
        _done(c, c.post(f"{path}/subscriptions/{old.id}/reactivate"), "reactivated")  # a double click
    assert [e.amount_minor for e in gateway.ledger] == [1700, 1700]
    with Session(engine) as s:
        new = s.exec(select(Subscription).where(Subscription.reactivated_from == old.id)).one()
        assert (new.status, new.current_period_start) == ("active", mar1.at)
        consent = s.exec(select(Consent).where(Consent.terms_version == reactivations.TERMS_VERSION)).one()
        assert (consent.ip_address, consent.user_agent, consent.channel, consent.amount_minor) == \
            (IP, "UA-test", "web", 1700)
        assert consent.terms_text is not None and consent.terms_text.startswith(terms)
    assert ("subscription.reactivated", "customer") in _events(engine, new.id)
    assert len(_mails(engine, "receipt")) == 2


def test_a_declined_card_on_subscribe_again_says_so_and_keeps_nothing(
    engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime,
) -> None:
    old = _ended(engine, now, settings, gateway)
    mar1 = Clock(datetime(2026, 3, 1, 10, tzinfo=UTC))
    gateway.fail_next("insufficient_funds")
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=mar1)
    with TestClient(app, base_url=BASE, follow_redirects=False, client=(IP, 50000)) as c:
        path = _path(settings, old.customer_id, mar1.at)
        r = c.post(f"{path}/subscriptions/{old.id}/reactivate")
        assert r.status_code == 409 and "was declined" in r.text and "nothing was charged" in r.text
        assert "Subscribe again" in r.text  # it can be tried again
    assert [(e.kind, e.amount_minor) for e in gateway.ledger] == [("charge", 1700)]  # the first period only
    with Session(engine) as s:
        assert s.exec(select(Subscription).where(Subscription.reactivated_from == old.id)).one().status == \
            "incomplete_expired"


# --------------------------------------------------------------------------- price acceptance


def test_accepting_a_new_price_records_the_consent_once(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway)
    with transaction(engine) as s:
        change = pricing.reprice(s, "basic-monthly", amount_minor=2900, now=now + timedelta(days=1)).change
        change_id = change.id
    [notice] = _mails(engine, "price_change")
    path = _path(settings, sub.customer_id, clock.at)
    html = client.get(path).text
    assert "The price changes from $17.00 to $29.00 every month from February 15, 2026." in html
    _done(client, client.post(f"{path}/subscriptions/{sub.id}/accept-price"), "price_accepted")
    page = _done(client, client.post(f"{path}/subscriptions/{sub.id}/accept-price"), "price_accepted")  # again
    assert "You accepted it on January 18, 2026" in page and "Accept the new price" not in page
    with Session(engine) as s:
        [c] = s.exec(select(Consent).where(Consent.channel == "web",
                                           Consent.terms_version == f"price-change:{change_id}")).all()
        assert (c.ip_address, c.amount_minor, c.accepted_at) == (IP, 2900, clock.at)
        assert c.terms_text == ("I accept the new price of Basic Monthly: $29.00 every month (instead of $17.00), "
                                "from the first renewal on or after February 15, 2026, until I cancel.")
    assert _events(engine, sub.id).count(("subscription.price_change_accepted", "customer")) == 1
    assert notice.id  # the notice e-mail itself links the account page (rendered: test_emails)
    with Session(engine) as s:
        assert s.exec(select(Plan).where(Plan.code == "basic-monthly")).one().amount_minor == 2900
