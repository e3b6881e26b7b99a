"""The customer cancel pages: GET shows, POST cancels; forged or expired links change nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from billing_engine import links
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Notification, Subscription, SubscriptionStatus
from billing_engine.settings import Settings, load_settings
from tests.factories import Clock, make_plan, make_subscription


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="page-secret-" + "p" * 30, public_base_url="https://news.example",
                         company_name="The Weekly", support_email="help@news.example")


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now + timedelta(days=3))


@pytest.fixture
def client(engine: Engine, settings: Settings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=clock)
    with TestClient(app, base_url="https://news.example", follow_redirects=False) as c:
        yield c


def _paid_subscription(engine: Engine, now: datetime, settings: Settings, **plan_kw: object) -> str:
    with transaction(engine) as s:
        plan = make_plan(s, now, **plan_kw)  # type: ignore[arg-type]
        sub_id = make_subscription(s, now, plan=plan).id
    assert run_cycle(engine, FakeGateway(), now=now, settings=settings).succeeded == 1
    return sub_id


def _path(settings: Settings, sub_id: str, at: datetime) -> str:
    return links.make_cancel_url(settings, sub_id, at).removeprefix("https://news.example")


def _snapshot(engine: Engine, sub_id: str) -> tuple[object, ...]:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        n_events = s.exec(select(func.count()).select_from(Event).where(Event.subscription_id == sub_id)).one()
        n_mails = s.exec(select(func.count()).select_from(Notification)).one()
        return (sub.status, sub.cancel_at_period_end, sub.canceled_at, sub.cancellation_kind,
                sub.cancellation_reason, sub.ended_at, n_events, n_mails)


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


def _buttons(html: str) -> list[str]:
    return re.findall(r"<button[^>]*>(.*?)</button>", html, flags=re.S)


def test_the_page_shows_who_what_when_how_much_and_one_button(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    before = _snapshot(engine, sub_id)
    r = client.get(_path(settings, sub_id, clock.at))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="en" dir="ltr">' in html and 'name="viewport"' in html
    assert "Ada (a***@example.com)" in html
    assert "Basic Monthly, $17.00 every month" in html
    assert "February 15, 2026: $17.00" in html
    assert "You will not be charged again." in html and "until February 15, 2026" in html
    assert _buttons(html) == ["Cancel subscription"]
    assert "<script" not in html
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert _snapshot(engine, sub_id) == before
    css = client.get("/assets/cancel.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_link_scanners_get_and_head_change_nothing(client: TestClient, engine: Engine, now: datetime,
                                                   settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    before = _snapshot(engine, sub_id)
    path = _path(settings, sub_id, clock.at)
    for _ in range(3):
        assert client.get(path, headers={"User-Agent": "Mozilla/5.0 (compatible; SafeLinks)"}).status_code == 200
        assert client.head(path).status_code == 200
        assert client.get(path + "?done=canceled").status_code == 200
    assert _snapshot(engine, sub_id) == before
    assert "Done." not in client.get(path + "?done=canceled").text  # the query string cannot lie


def test_one_click_cancels_at_period_end_as_voluntary_and_confirms(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    r = client.post(path)
    assert r.status_code == 303 and r.headers["location"] == path + "?done=canceled"
    sub = _sub(engine, sub_id)
    assert sub.status == SubscriptionStatus.ACTIVE and sub.cancel_at_period_end
    assert sub.cancellation_kind == "voluntary" and sub.canceled_by == "customer" and sub.canceled_at == clock.at
    page = client.get(r.headers["location"]).text
    assert "Done. Your subscription is canceled." in page
    assert "You keep access to Basic Monthly until February 15, 2026." in page
    assert "Undo: keep my subscription" in page and "Would you tell us why you left?" in page
    with Session(engine) as s:
        kinds = [n.kind for n in s.exec(select(Notification))]
        assert kinds.count("cancellation_confirmed") == 1


def test_repeating_the_post_is_harmless(client: TestClient, engine: Engine, now: datetime, settings: Settings,
                                        clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    assert client.post(path).status_code == 303
    after_first = _snapshot(engine, sub_id)
    clock.at += timedelta(minutes=5)
    for _ in range(3):
        r = client.post(path)
        assert r.status_code == 303
    assert _snapshot(engine, sub_id) == after_first
    assert "Your subscription is canceled" in client.get(path).text


def test_rfc8058_one_click_post_cancels_and_answers_200(client: TestClient, engine: Engine, now: datetime,
                                                        settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    r = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    assert _sub(engine, sub_id).cancel_at_period_end
    assert client.post(path, files={"List-Unsubscribe": (None, "One-Click")}).status_code == 200  # multipart


def test_a_plan_that_ends_access_at_once_is_canceled_immediately(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock
) -> None:
    sub_id = _paid_subscription(engine, now, settings, code="instant", cancel_immediately=True)
    path = _path(settings, sub_id, clock.at)
    assert "Your access ends now." in client.get(path).text
    client.post(path)
    sub = _sub(engine, sub_id)
    assert sub.status == SubscriptionStatus.CANCELED and sub.ended_at == clock.at
    assert sub.cancellation_kind == "voluntary"
    assert "ended on January 18, 2026." in client.get(path).text


def test_the_reason_is_asked_after_cancelling_and_recorded(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    r = client.post(path + "/feedback", data={"reason": "too_expensive", "comment": "  half the price please "})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=feedback")
    sub = _sub(engine, sub_id)
    assert sub.cancellation_reason == "too_expensive" and sub.cancellation_comment == "half the price please"
    assert sub.cancel_at_period_end and sub.cancellation_kind == "voluntary"
    page = client.get(r.headers["location"]).text
    assert "Thank you for telling us." in page and "Your answer: It costs too much." in page


@pytest.mark.parametrize("form", [{}, {"reason": "because"}, {"reason": "payment_failed"}])
def test_bad_feedback_shows_the_page_again_and_changes_nothing(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock, form: dict[str, str]
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    before = _snapshot(engine, sub_id)
    r = client.post(path + "/feedback", data=form)
    assert r.status_code == 422 and 'role="alert"' in r.text
    assert _snapshot(engine, sub_id) == before


def test_feedback_before_cancelling_changes_nothing(client: TestClient, engine: Engine, now: datetime,
                                                   settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    before = _snapshot(engine, sub_id)
    r = client.post(_path(settings, sub_id, clock.at) + "/feedback", data={"reason": "unused"})
    assert r.status_code == 409
    assert _snapshot(engine, sub_id) == before


def test_undo_reactivates_until_the_period_ends(client: TestClient, engine: Engine, now: datetime,
                                                settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    r = client.post(path + "/undo")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=undone")
    sub = _sub(engine, sub_id)
    assert not sub.cancel_at_period_end and sub.cancellation_kind is None
    page = client.get(r.headers["location"]).text
    assert "Welcome back." in page and _buttons(page) == ["Cancel subscription"]
    assert client.post(path + "/undo").status_code == 303  # a repeated click is harmless
    with Session(engine) as s:
        assert [n.kind for n in s.exec(select(Notification))].count("subscription_reactivated") == 1


def test_undo_after_the_period_ended_is_refused(client: TestClient, engine: Engine, now: datetime,
                                               settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    clock.at = datetime(2026, 2, 16, tzinfo=now.tzinfo)
    run_cycle(engine, FakeGateway(), now=clock.at, settings=settings)
    before = _snapshot(engine, sub_id)
    assert before[0] == SubscriptionStatus.CANCELED
    page = client.get(path).text
    assert "Undo" not in page
    r = client.post(path + "/undo")
    assert r.status_code == 409 and 'role="alert"' in r.text
    assert _snapshot(engine, sub_id) == before


def _forgeries(settings: Settings, sub_id: str, at: datetime) -> list[str]:
    good = links.make_cancel_token(settings, sub_id, at)
    other_key = load_settings(secret_key="attacker-" + "a" * 30)
    return [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        good[:40],
        links.make_cancel_token(other_key, sub_id, at),
        "InN1Yl8wMSJ9.aWiskA.forged",
    ]


@pytest.mark.parametrize("suffix", ["", "/feedback", "/undo"])
def test_forged_links_cancel_nothing(client: TestClient, engine: Engine, now: datetime, settings: Settings,
                                     clock: Clock, suffix: str) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    before = _snapshot(engine, sub_id)
    for token in _forgeries(settings, sub_id, clock.at):
        assert client.get(f"/cancel/{token}").status_code == 404
        r = client.post(f"/cancel/{token}{suffix}", data={"reason": "other"})
        assert r.status_code == 404, token
        assert "This link is not valid" in r.text and "Nothing has been changed" in r.text
        assert client.post(f"/cancel/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert _snapshot(engine, sub_id) == before


def test_a_link_for_a_subscription_that_does_not_exist_is_not_found(client: TestClient, settings: Settings,
                                                                      clock: Clock) -> None:
    path = _path(settings, "sub_doesnotexist", clock.at)
    assert client.get(path).status_code == 404
    assert client.post(path).status_code == 404


def test_an_expired_link_cancels_nothing_and_offers_a_fresh_one(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: Clock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    clock.at += timedelta(days=settings.cancel_link_max_age_days, seconds=1)
    before = _snapshot(engine, sub_id)
    r = client.get(path)
    assert r.status_code == 400 and "This link has expired" in r.text
    assert _buttons(r.text) == ["E-mail me a new link"]
    for suffix in ("", "/feedback", "/undo"):
        assert client.post(path + suffix, data={"reason": "other"}).status_code == 400
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert _snapshot(engine, sub_id) == before
    r = client.post(path + "/resend")
    assert r.status_code == 200 and "a***@example.com" in r.text
    client.post(path + "/resend")  # twice in the same hour: one e-mail
    with Session(engine) as s:
        fresh = [n for n in s.exec(select(Notification)) if n.kind == "cancel_link"]
    assert len(fresh) == 1 and fresh[0].to_email == "ada@example.com" and fresh[0].subscription_id == sub_id
    sub = _sub(engine, sub_id)
    assert not sub.cancel_at_period_end and sub.status == SubscriptionStatus.ACTIVE


def test_a_forged_link_cannot_ask_for_a_fresh_one(client: TestClient, engine: Engine, now: datetime,
                                                 settings: Settings, clock: Clock) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    before = _snapshot(engine, sub_id)
    for token in _forgeries(settings, sub_id, clock.at):
        assert client.post(f"/cancel/{token}/resend").status_code == 404
    assert _snapshot(engine, sub_id) == before
