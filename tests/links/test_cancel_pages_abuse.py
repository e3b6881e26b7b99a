"""The cancel pages under repeated use: clicking cancel / undo in a loop queues no e-mail
storm, and the feedback form cannot be replayed to rewrite the recorded reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from billing_engine import abuse, notifications
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Event, Notification
from billing_engine.settings import Settings, load_settings
from tests.links.test_cancel_pages import _paid_subscription, _path, _sub

KINDS = ("cancellation_confirmed", "subscription_reactivated")


class TickingClock:
    """Every request a little later than the previous one (a user clicking fast)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        self.at += timedelta(milliseconds=15)
        return self.at


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="page-secret-" + "p" * 30, public_base_url="https://news.example",
                         mail_transport="none")


@pytest.fixture
def clock(now: datetime) -> TickingClock:
    return TickingClock(now + timedelta(days=3))


@pytest.fixture
def client(engine: Engine, settings: Settings, clock: TickingClock) -> Iterator[TestClient]:
    app = create_app(settings=settings, engine=engine, gateway=FakeGateway(), clock=clock)
    with TestClient(app, base_url="https://news.example", follow_redirects=False) as c:
        yield c


def _mails(engine: Engine, sub_id: str) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).where(Notification.subscription_id == sub_id,
                                                      col(Notification.kind).in_(KINDS))
                           .order_by(col(Notification.next_attempt_at), col(Notification.id))).all())


def _events(engine: Engine, sub_id: str) -> list[str]:
    with Session(engine) as s:
        return [e.type for e in s.exec(select(Event).where(Event.subscription_id == sub_id))]


def test_ten_cancel_undo_cycles_queue_one_e_mail_of_each_kind(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: TickingClock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    for _ in range(10):
        assert client.post(path).status_code == 303
        assert client.post(path + "/undo").status_code == 303
    assert client.post(path).status_code == 303  # ... and the customer leaves in the end
    mails = _mails(engine, sub_id)
    assert sorted(m.kind for m in mails) == sorted(KINDS)
    assert mails[-1].kind == "cancellation_confirmed"  # the last e-mail tells the final state
    assert _sub(engine, sub_id).cancel_at_period_end
    events = _events(engine, sub_id)  # the audit log still has every change
    assert events.count("subscription.cancel_scheduled") == 11 and events.count("subscription.reactivated") == 10


def test_a_sent_confirmation_does_not_swallow_the_next_one(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: TickingClock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    with transaction(engine) as s:  # the first confirmation went out
        for n in s.exec(select(Notification).where(Notification.subscription_id == sub_id)):
            n.status, n.attempts = "sent", 1
            s.add(n)
    client.post(path + "/undo")
    client.post(path)
    assert [m.kind for m in _mails(engine, sub_id)].count("cancellation_confirmed") == 2


def test_confirmations_further_apart_than_the_window_are_all_sent(engine: Engine, now: datetime) -> None:
    from tests.factories import make_subscription

    with transaction(engine) as s:
        sub = make_subscription(s, now)
        for i, at in enumerate((now, now + abuse.COALESCE_WINDOW + timedelta(seconds=1))):
            with abuse.coalesced_emails(s, sub.id, now=at):
                notifications.enqueue(s, notifications.Kind.CANCELLATION_CONFIRMED, customer_id=sub.customer_id,
                                      subscription_id=sub.id, dedupe_key=f"c:{i}", at=at)
    assert len(_mails(engine, sub.id)) == 2


def test_feedback_is_recorded_once_and_a_second_post_changes_nothing(
    client: TestClient, engine: Engine, now: datetime, settings: Settings, clock: TickingClock
) -> None:
    sub_id = _paid_subscription(engine, now, settings)
    path = _path(settings, sub_id, clock.at)
    client.post(path)
    assert client.post(path + "/feedback", data={"reason": "too_expensive"}).status_code == 303
    events = _events(engine, sub_id)
    r = client.post(path + "/feedback", data={"reason": "low_quality", "comment": "spam " * 100})
    assert r.status_code == 409
    assert "Your answer was already recorded. Nothing was changed." in r.text
    sub = _sub(engine, sub_id)
    assert (sub.cancellation_reason, sub.cancellation_comment) == ("too_expensive", None)
    assert _events(engine, sub_id) == events
