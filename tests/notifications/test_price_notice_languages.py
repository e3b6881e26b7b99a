"""The price-change notice in the customer's language: the e-mail a Hungarian (Hebrew,
Russian) subscriber is sent is in that language with babel's amounts and dates, and the
consent recorded by the notice (channel ``price_notice``) is exactly the notice paragraph
of the e-mail that was delivered, in the language it was delivered in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import customers, notifications, pricing
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Consent, Customer, Notification
from billing_engine.settings import Settings, load_settings
from tests.factories import Outbox, make_plan, make_subscription

NBSP = "\xa0"
JAN15 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
# a customer per language (None: no locale, the settings' default "en")
LOCALES = {"en@example.com": None, "hu@example.com": "hu", "he@example.com": "he_IL", "ru@example.com": "ru"}



def _settings() -> Settings:
    return load_settings(mail_transport="file", default_locale="en", public_base_url="https://news.example",
                         secret_key="price-notice-" + "s" * 30, company_name="The Weekly")


def _text(msg: EmailMessage) -> str:
    return str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def _html(msg: EmailMessage) -> str:
    return str(msg.get_body(("html",)).get_content())  # type: ignore[union-attr]


@pytest.fixture
def sent(engine: Engine) -> dict[str, tuple[EmailMessage, Consent]]:
    """Four subscribers of Basic Monthly (17.00 USD) charged on Jan 15; on Jan 16 its price
    goes up to 29.00 USD with 30 days' notice (first renewal at the new price: Feb 15, exactly the end of the notice); the
    notices are delivered. Per recipient: the e-mail received and the consent recorded."""
    settings = _settings()
    with transaction(engine) as s:
        plan = make_plan(s, JAN15)
        for email, locale in LOCALES.items():
            sub = make_subscription(s, JAN15, plan=plan, email=email)
            if locale is not None:
                customers.set_locale(s, s.get_one(Customer, sub.customer_id), locale, now=JAN15)
    assert run_cycle(engine, FakeGateway(), now=JAN15, settings=settings).succeeded == 4
    with transaction(engine) as s:
        assert pricing.reprice(s, "basic-monthly", amount_minor=2900, notice_days=30, now=JAN15 + timedelta(days=1),
                               default_locale=settings.default_locale).notified == 4
    with Session(engine) as s:  # the receipts of Jan 15 are not what this is about
        receipts = s.exec(select(Notification.id).where(Notification.kind != "price_change")).all()
    with transaction(engine) as s:
        for nid in receipts:
            s.delete(s.get_one(Notification, nid))
    outbox = Outbox()
    assert notifications.deliver_pending(engine, JAN15 + timedelta(days=1), settings, outbox) == 4
    with Session(engine) as s:
        by_customer = {c.customer_id: c for c in s.exec(select(Consent).where(Consent.channel == "price_notice"))}
        emails = {c.id: c.email for c in s.exec(select(Customer))}
    consents = {emails[cid]: c for cid, c in by_customer.items()}
    return {str(m["To"]): (m, consents[str(m["To"])]) for m in outbox.sent}


def test_a_hungarian_customer_s_price_change_e_mail_is_hungarian_with_hungarian_amounts_and_dates(
    sent: dict[str, tuple[EmailMessage, Consent]],
) -> None:
    msg, _ = sent["hu@example.com"]
    text, html = _text(msg), _html(msg)
    assert msg["Subject"] == "Basic Monthly előfizetésének ára megváltozik: 2026. február 15."
    for expected in (f"Basic Monthly előfizetésének ára megváltozik: 17,00{NBSP}USD helyett 29,00{NBSP}USD havonta.",
                     "Az új áron az első terhelés napja 2026. február 15., addig semmi sem változik.",
                     "Ha 2026. február 15. előtt lemondja, az új árat soha nem számítjuk fel.",
                     f"Jelenlegi ár:  17,00{NBSP}USD havonta", f"Új ár:  29,00{NBSP}USD havonta",
                     "Első terhelés az új áron:  2026. február 15.",
                     "Az új árat most is elfogadhatja a fiókoldalán:", "Előfizetés lemondása:"):
        assert expected in text, expected
    assert "2026. február 15., addig" in html and 'lang="hu"' in html and "Előfizetés lemondása" in html
    for english in ("The price", "every month", "February", "$17.00", "$29.00", "new price", "Cancel",
                    "One click"):
        assert english not in text and english not in msg["Subject"], english
    assert ".." not in text  # no sentence ends on a Hungarian long date ("2026. február 15..")


@pytest.mark.parametrize("email", ["en@example.com", "hu@example.com", "he@example.com", "ru@example.com"])
def test_the_notice_consent_is_the_notice_paragraph_of_the_e_mail_delivered(
    sent: dict[str, tuple[EmailMessage, Consent]], email: str,
) -> None:
    msg, consent = sent[email]
    text = _text(msg)
    paragraphs = text.split("\n\n")
    assert consent.terms_text in paragraphs  # word for word, a whole paragraph of the e-mail received
    assert consent.terms_text in _html(msg).replace("&#39;", "'")
    assert (consent.amount_minor, consent.currency) == (2900, "USD")
    words = {"en@example.com": ["The price of your Basic Monthly subscription changes from $17.00 to $29.00 "
                                "every month.", "February 15, 2026", "you agree to the new price",
                                "you will never be charged the new price"],
             "hu@example.com": [f"17,00{NBSP}USD helyett 29,00{NBSP}USD havonta", "2026. február 15.",
                                "elfogadja az új árat"],
             "he@example.com": ["המחיר של המינוי שלך ל-Basic Monthly משתנה", "כל חודש", "2026", "מסכימים למחיר החדש"],
             "ru@example.com": ["Цена вашей подписки Basic Monthly меняется", "каждый месяц", "15 февраля 2026\u202fг.",
                                "вы соглашаетесь с новой ценой"]}[email]
    for w in words:
        assert w in consent.terms_text, w
    if email == "en@example.com":  # the whole English notice, as an English customer reads it
        assert consent.terms_text == (
            "The price of your Basic Monthly subscription changes from $17.00 to $29.00 every month. "
            "Your first charge at the new price is on February 15, 2026; until then nothing changes. "
            "You don't need to do anything to keep it: if you do not cancel before February 15, 2026, you agree to "
            "the new price. If you cancel before February 15, 2026, you will never be charged the new price.")
        assert "every every" not in text


def test_the_notice_is_written_in_the_language_its_consent_was_recorded_in(
    sent: dict[str, tuple[EmailMessage, Consent]], engine: Engine,
) -> None:
    """A customer who changes language after the notice was recorded (before it is delivered)
    still gets the words recorded: the e-mail's language is the one in its payload."""
    _, consent = sent["hu@example.com"]
    with transaction(engine) as s:
        customers.set_locale(s, s.get_one(Customer, consent.customer_id), "ru", now=JAN15 + timedelta(days=1))
    with Session(engine) as s:
        row = s.exec(select(Notification).where(Notification.customer_id == consent.customer_id,
                                                Notification.kind == "price_change")).one()
        again = notifications.compose(s, row, _settings(), JAN15 + timedelta(days=1))
    assert consent.terms_text in _text(again).split("\n\n")
