"""Every customer e-mail links to the self-service page; the payment-failed and
card-expiring e-mails link straight to the card update (no "reply to this e-mail")."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from billing_engine import links, notifications
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import Settings, load_settings
from tests.notifications.smtp_server import html_of, text_of
from tests.notifications.test_templates import _compose

K = notifications.Kind
BASE = "https://billing.example"


@pytest.fixture
def settings() -> Settings:
    return load_settings(secret_key="mail-secret-" + "m" * 30, public_base_url=BASE, company_name="Gold Club",
                         support_email="help@gold.example")


@pytest.mark.parametrize("kind", notifications.ALL_KINDS)
def test_every_email_links_to_the_customers_account_page(kind: str, sqlite_engine: Engine, now: datetime,
                                                         settings: Settings) -> None:
    msg = _compose(sqlite_engine, now, settings, kind)
    text, html = text_of(msg), html_of(msg)
    match = re.search(rf"{re.escape(BASE)}/account/[A-Za-z0-9_.\-]+", text)
    assert match, text
    assert match.group(0) in html
    token = match.group(0).rsplit("/", 1)[1]
    customer_id = links.verify_account_token(settings, token, now)
    assert customer_id.startswith("cus_")


@pytest.mark.parametrize("kind", [K.PAYMENT_FAILED, K.CARD_EXPIRING])
def test_payment_failed_and_card_expiring_link_straight_to_the_card_update(
    kind: str, sqlite_engine: Engine, now: datetime, settings: Settings,
) -> None:
    msg = _compose(sqlite_engine, now, settings, kind)
    text, html = text_of(msg), html_of(msg)
    for body in (text, html):
        assert "reply to this e-mail" not in body.lower().split("questions?")[0]
    match = re.search(rf"{re.escape(BASE)}/account/[A-Za-z0-9_.\-]+/subscriptions/sub_[0-9A-Z]+/card", text)
    assert match, text
    assert match.group(0) in html
    # the link opens the card form
    app = create_app(settings=settings, engine=sqlite_engine, gateway=FakeGateway(), clock=lambda: now)
    with TestClient(app, base_url=BASE) as client:
        page = client.get(match.group(0).removeprefix(BASE))
    assert page.status_code == 200 and "Update your card" in page.text
    assert "Agree and save card" in page.text
