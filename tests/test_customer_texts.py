"""One function for every text about access and charges (billing_engine.terms): the
reminder e-mail and the cancel page say the same; the involuntary end has a link;
money and dates are formatted for the customer's locale."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from billing_engine import links, notifications
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Notification
from billing_engine.settings import Settings, load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings(secret_key="texts-secret-" + "t" * 30, public_base_url="https://news.example",
                         company_name="The Ledger", support_email="help@ledger.example", mail_transport="none")


def _mail(engine: Engine, kind: str, at: datetime, settings: Settings = SETTINGS) -> EmailMessage:
    """The last e-mail of ``kind``."""
    with Session(engine) as s:
        n = s.exec(select(Notification).where(Notification.kind == kind)
                   .order_by(Notification.created_at.desc())).first()  # type: ignore[attr-defined]
        assert n is not None, kind
        return notifications.compose(s, n, settings, at)


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _page(engine: Engine, sub_id: str, at: datetime) -> str:
    app = create_app(settings=SETTINGS, engine=engine, gateway=FakeGateway(), clock=lambda: at)
    with TestClient(app, base_url="https://news.example") as c:
        return c.get(links.make_cancel_url(SETTINGS, sub_id, at).removeprefix("https://news.example")).text


def _reminded(engine: Engine, now: datetime, **plan_kw: object) -> str:
    with transaction(engine) as s:
        sub_id = make_subscription(s, now, plan=make_plan(s, now, **plan_kw)).id  # type: ignore[arg-type]
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=SETTINGS)
    run_cycle(engine, gw, now=now + timedelta(days=4), settings=SETTINGS)  # weekly: reminded 3.5 days ahead
    return sub_id


def test_a_weekly_plan_that_ends_access_at_once_says_so_in_the_reminder_and_on_the_page(
        sqlite_engine: Engine, now: datetime) -> None:
    sub_id = _reminded(sqlite_engine, now, code="weekly", interval="week", amount_minor=200, cancel_immediately=True)
    # the receipt of a weekly charge states the next one and is its reminder
    mail = _text(_mail(sqlite_engine, "receipt", now + timedelta(days=4)))
    page = _page(sqlite_engine, sub_id, now + timedelta(days=4))
    assert "Next charge: $2.00 on " in mail and "then $2.00 every week until you cancel." in mail
    assert "If you cancel, your access ends at once." in mail
    assert "Your access ends now." in page
    assert "keep access" not in mail and "keep access" not in page


def test_a_monthly_plan_keeps_access_until_the_same_date_in_the_reminder_and_on_the_page(
        sqlite_engine: Engine, now: datetime) -> None:
    sub_id = _reminded(sqlite_engine, now, code="monthly", interval="month")
    at = now + timedelta(days=25)
    run_cycle(sqlite_engine, FakeGateway(), now=at, settings=SETTINGS)  # the monthly reminder, 7 days ahead
    with Session(sqlite_engine) as s:
        from billing_engine.models import Subscription

        sub = s.get(Subscription, sub_id)
        assert sub is not None
        until = f"{sub.current_period_end:%B} {sub.current_period_end.day}, {sub.current_period_end.year}"
    mail = _text(_mail(sqlite_engine, "renewal_reminder", at))
    page = _page(sqlite_engine, sub_id, at)
    assert f"If you cancel, you keep access until {until}." in mail
    assert f"You keep access until {until}." in page


def test_the_involuntary_end_e_mail_links_to_resubscribe_or_update_the_card(sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        make_subscription(s, now, token="pm_card_chargeDeclinedFraudulent")
    run_cycle(sqlite_engine, FakeGateway(), now=now, settings=SETTINGS)
    msg = _mail(sqlite_engine, "canceled_involuntary", now)
    assert "Resubscribe or update your card:\nhttps://news.example/cancel/" in _text(msg)
    html = msg.get_body(("html",))
    assert html is not None and "Resubscribe or update my card</a>" in str(html.get_content())
    with_signup = load_settings(**{**SETTINGS.model_dump(), "signup_url": "https://ledger.example/join"})
    assert "https://ledger.example/join" in _text(_mail(sqlite_engine, "canceled_involuntary", now, with_signup))
