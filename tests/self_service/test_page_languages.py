"""The account pages in the customer's language (customers.locale, else the default locale):
the texts, ``lang`` / ``dir``, dates and amounts as babel writes them for that locale, and
the consent texts recorded exactly as shown, in the language shown."""

from __future__ import annotations

import html as htmllib
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api.app import create_app
from billing_engine import cancellations, card_updates, customers, edits, links, notifications, pricing, reactivations
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import CardUpdate, Consent, Customer, Invoice, Subscription
from billing_engine.settings import Settings, load_settings
from tests.factories import Clock, Outbox, make_plan, make_subscription

BASE = "https://news.example"
NBSP = "\xa0"


def _settings(default_locale: str = "en") -> Settings:
    return load_settings(secret_key="self-service-" + "s" * 30, public_base_url=BASE, company_name="The Weekly",
                         support_email="help@news.example", seller_name="Weekly Media GmbH",
                         default_locale=default_locale)


@pytest.fixture
def settings() -> Settings:
    return _settings()


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now + timedelta(days=3))  # Jan 18


def _client(engine: Engine, settings: Settings, gateway: FakeGateway, clock: Clock) -> TestClient:
    app = create_app(settings=settings, engine=engine, gateway=gateway, clock=clock)
    return TestClient(app, base_url=BASE, follow_redirects=False, client=("203.0.113.9", 50000),
                      headers={"User-Agent": "Mozilla/5.0 (languages test)"})


@pytest.fixture
def client(engine: Engine, settings: Settings, gateway: FakeGateway, clock: Clock) -> Iterator[TestClient]:
    with _client(engine, settings, gateway, clock) as c:
        yield c


def _paid(engine: Engine, now: datetime, settings: Settings, gateway: FakeGateway, locale: str | None, *,
          pause: bool = False) -> Subscription:
    """A Basic Monthly (17.00 USD, Visa 4242 expiring 12/2034) subscriber charged on Jan 15."""
    with transaction(engine) as s:
        plan = make_plan(s, now)
        if pause:
            edits.update_plan(s, plan.code, now=now, customer_can_pause=True)
        sub = make_subscription(s, now, plan=plan)
        if locale is not None:
            customers.set_locale(s, s.get_one(Customer, sub.customer_id), locale, now=now)
        sub_id = sub.id
    assert run_cycle(engine, gateway, now=now, settings=settings).succeeded == 1
    with Session(engine) as s:
        return s.get_one(Subscription, sub_id)


def _path(settings: Settings, customer_id: str, at: datetime) -> str:
    return links.make_account_url(settings, customer_id, at).removeprefix(BASE)


def _consents_shown(page: str) -> list[str]:
    """The consent paragraphs as the customer reads them (tags and entities resolved)."""
    return [htmllib.unescape(m) for m in re.findall(r'<p class="consent">(.*?)</p>', page, re.S)]


def _html_tag(page: str) -> str:
    m = re.search(r"<html[^>]*>", page)
    assert m is not None
    return m.group(0)


# The receipt PDF a customer downloads: its labels, amount and dates in their language
PDF_WORDS = {
    "en": ["Receipt", "Billed to", "Amount paid", "Paid on", "$17.00", "January 15, 2026 to February 15, 2026",
           "Thank you. Reference"],
    "hu": ["Nyugta", "Vevő", "Fizetett összeg", "Fizetés dátuma", f"17,00{NBSP}USD", "2026. február 15.",
           "Köszönjük. Hivatkozási szám:", "előfizetés:"],
    "he_IL": ["קבלה", "לכבוד", "הסכום ששולם", "תאריך התשלום", "בפברואר", "2026", f"${NBSP}17.00", "אסמכתא"],
    "ru": ["Квитанция", "Плательщик", "Оплаченная сумма", "Дата оплаты", f"17,00{NBSP}$", "15 февраля 2026",
           "Спасибо. Номер для справок:", "подписка:"],
}


@pytest.mark.parametrize("locale", list(PDF_WORDS))
def test_the_receipt_pdf_is_in_the_customer_s_language(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    locale: str,
) -> None:
    sub = _paid(engine, now, settings, gateway, locale)
    pdf = client.get(_receipt_path(engine, settings, sub, clock.at) + ".pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    for words in PDF_WORDS[locale]:
        assert words in text, (words, text)
    if locale != "en":
        for english in ("Receipt", "Billed to", "Amount paid", "Paid on", "Thank you", "Description", "Period"):
            assert english not in text, (english, text)


# --------------------------------------------------------------------------- the page



# The amount (17.00 USD) and the dates (the Jan 15 charge, the Feb 15 renewal) as the customer
# reads them, in the e-mail and on the page its link opens: one form per locale.
SAME_WORDS = {
    None: ["$17.00", "January 15, 2026", "February 15, 2026"],  # no locale: the default, English
    "en": ["$17.00", "January 15, 2026", "February 15, 2026"],
    "hu": [f"17,00{NBSP}USD", "2026. január 15.", "2026. február 15."],
    "he_IL": [f"\u200f17.00{NBSP}\u200f$", "15 בינואר 2026", "15 בפברואר 2026"],
    "ru": [f"17,00{NBSP}$", "15 января 2026\u202fг.", "15 февраля 2026\u202fг."],
}


@pytest.mark.parametrize("locale", list(SAME_WORDS))
def test_the_page_writes_amounts_and_dates_as_the_e_mail_sent_to_the_same_customer(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    locale: str | None,
) -> None:
    sub = _paid(engine, now, settings, gateway, locale)
    outbox = Outbox()
    notifications.deliver_pending(engine, now + timedelta(minutes=1), settings, outbox)
    receipts = [m for m in outbox.sent if str(m["To"]) == _email(engine, sub)]
    assert receipts, "the charge sends a receipt"
    mail = htmllib.unescape(str(receipts[0].get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    page = htmllib.unescape(client.get(_path(settings, sub.customer_id, clock.at)).text)
    receipt_page = htmllib.unescape(client.get(_receipt_path(engine, settings, sub, clock.at)).text)
    for words in SAME_WORDS[locale]:
        assert words in mail, (words, mail)
        assert words in page, words
        assert words in receipt_page, words
    if locale in (None, "en"):
        for old in ("17.00 USD", "15 February 2026", "15 January 2026"):
            assert old not in page and old not in receipt_page, old


def _email(engine: Engine, sub: Subscription) -> str:
    with Session(engine) as s:
        return s.get_one(Customer, sub.customer_id).email


def _receipt_path(engine: Engine, settings: Settings, sub: Subscription, at: datetime) -> str:
    with Session(engine) as s:
        inv = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)).one()
    return f"{_path(settings, sub.customer_id, at)}/receipts/{inv.id}"



def test_a_hungarian_customer_reads_the_page_in_hungarian_with_hungarian_dates_and_amounts(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, "hu")
    page = client.get(_path(settings, sub.customer_id, clock.at))
    assert page.status_code == 200
    html = page.text
    assert _html_tag(html) == '<html lang="hu" dir="ltr">'
    for text in ("Az Ön fiókja", "Előfizetések", "Ár", "Állapot", "Aktív", "Következő terhelés", "Kártya cseréje",
                 "Előfizetés lemondása", "Számlák és nyugták", "Nyugta", "PDF letöltése",
                 f"17,00{NBSP}USD havonta",  # the price: babel's Hungarian amount, the e-mails' "havonta"
                 f"2026. február 15.: 17,00{NBSP}USD",  # the next charge: Hungarian date and amount
                 "4242 végű Visa (lejár: 12/2034)",
                 "2026. január 15. – 2026. február 15.",  # the invoice's period
                 "Kifizetve: 2026. január 15.",
                 "Ez az oldal csak az Öné"):
        assert text in html, text
    for english in ("Your account", "Subscriptions", "Next charge", "every month", "February", "$17.00",
                    "ending 4242", "Cancel subscription", "Invoices and receipts"):
        assert english not in html, english


def test_a_hebrew_customer_s_page_is_right_to_left_in_hebrew(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, "he_IL")
    html = client.get(_path(settings, sub.customer_id, clock.at)).text
    assert _html_tag(html) == '<html lang="he-IL" dir="rtl">'
    assert "החשבון שלך" in html and "החיוב הבא" in html and "ביטול המינוי" in html
    assert "15 בפברואר 2026" in html  # babel's Hebrew date
    assert "Your account" not in html and "February" not in html


def test_a_customer_without_a_locale_gets_the_default_locale(
    engine: Engine, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    settings = _settings(default_locale="hu")
    sub = _paid(engine, now, settings, gateway, None)
    with _client(engine, settings, gateway, clock) as c:
        html = c.get(_path(settings, sub.customer_id, clock.at)).text
        assert _html_tag(html) == '<html lang="hu" dir="ltr">'
        assert "Az Ön fiókja" in html and f"2026. február 15.: 17,00{NBSP}USD" in html
        # a link that names no customer is in the default locale too
        bad = c.get(_path(settings, sub.customer_id, clock.at)[:-3] + "abc")
        assert bad.status_code == 404 and 'lang="hu"' in bad.text and "Ez a link érvénytelen" in bad.text
    with transaction(engine) as s:  # the customer's own locale wins over the default
        customers.set_locale(s, s.get_one(Customer, sub.customer_id), "ru", now=now)
    with _client(engine, settings, gateway, clock) as c:
        html = c.get(_path(settings, sub.customer_id, clock.at)).text
        assert _html_tag(html) == '<html lang="ru" dir="ltr">' and "Ваш аккаунт" in html
        assert "15 февраля 2026" in html and f"17,00{NBSP}$" in html


def test_banners_errors_and_the_not_found_page_are_in_the_customer_s_language(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
) -> None:
    sub = _paid(engine, now, settings, gateway, "hu", pause=True)
    path = _path(settings, sub.customer_id, clock.at)
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "period_end", "until": "soon"})
    assert r.status_code == 422 and "adjon meg egy dátumot, például 2026-03-01" in r.text
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "period_end", "until": "2026-04-01"})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Kész. Előfizetését a kifizetett időszak végén szüneteltetjük." in page  # the banner
    assert "Szüneteltetés: 2026. február 15. – 2026. április 1." in page  # the pause note
    r = client.post(f"{path}/subscriptions/{sub.id}/cancel")
    assert "Kész. Előfizetését lemondta. Többé nem terheljük." in client.get(r.headers["location"]).text
    with Session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)).one()
    receipt = client.get(f"{path}/receipts/{invoice.id}")
    assert receipt.status_code == 200
    assert "Fizetett összeg" in receipt.text and f"17,00{NBSP}USD" in receipt.text and "Amount paid" not in receipt.text
    missing = client.get(f"{path}/receipts/inv_nope")
    assert missing.status_code == 404 and "Ezt a nyugtát nem találjuk a fiókjában." in missing.text


# What a refused click says, per language: a "resume on" day before the pause starts (Feb 15,
# the end of the paid period), a pause the plan no longer allows, a card that cannot be saved (its bank
# asks for 3-D Secure at set-up)
REFUSALS = {
    "en": ["Choose a day after February 15, 2026, the day the pause starts.",
           "This subscription cannot be paused from this page.",
           "This card could not be saved. Nothing was charged; please try another card."],
    "hu": ["Válasszon egy napot 2026. február 15. után, amikor a szüneteltetés kezdődik.",
           "Ezt az előfizetést nem lehet erről az oldalról szüneteltetni.",
           "Ezt a kártyát nem sikerült elmenteni. Semmit nem terheltünk; kérjük, próbáljon meg egy másik kártyát."],
    "he_IL": ["נא לבחור יום אחרי 15 בפברואר 2026, היום שבו ההשהיה מתחילה.",
              "לא ניתן להשהות את המנוי הזה מהדף הזה.",
              "לא ניתן היה לשמור את הכרטיס הזה. לא בוצע חיוב; נא לנסות כרטיס אחר."],
    "ru": ["Выберите дату позже 15 февраля 2026\u202fг. — дня, когда начинается приостановка.",
           "Эту подписку нельзя приостановить на этой странице.",
           "Не удалось сохранить эту карту. Деньги не списаны; пожалуйста, попробуйте другую карту."],
}


@pytest.mark.parametrize("locale", list(REFUSALS))
def test_a_refused_click_says_why_in_the_customer_s_language(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    locale: str,
) -> None:
    too_soon, not_pausable, card_refused = REFUSALS[locale]
    sub = _paid(engine, now, settings, gateway, locale, pause=True)
    path = _path(settings, sub.customer_id, clock.at)
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "period_end", "until": "2026-02-01"})
    assert r.status_code == 422 and too_soon in htmllib.unescape(r.text), r.text
    assert "T09:00:00" not in r.text and "resumes_at" not in r.text
    with transaction(engine) as s:  # the seller stops letting customers pause (a page opened before)
        edits.update_plan(s, "basic-monthly", now=now, customer_can_pause=False)
    r = client.post(f"{path}/subscriptions/{sub.id}/pause", data={"when": "now"})
    assert r.status_code == 409 and not_pausable in htmllib.unescape(r.text), r.text
    r = client.post(f"{path}/subscriptions/{sub.id}/card", data={"test_token": "pm_card_authenticationRequiredOnSetup"})
    assert r.status_code == 409 and card_refused in htmllib.unescape(r.text), r.text
    assert "gateway" not in r.text.lower()


# --------------------------------------------------------------------------- consents: recorded as shown


@pytest.mark.parametrize("locale,words", [("hu", "Felhatalmazom"), ("he", "אני מאשר/ת"), ("ru", "Я разрешаю"),
                                          ("en", "I authorise")])
def test_the_card_consent_recorded_is_the_text_shown_in_the_language_shown(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    locale: str, words: str,
) -> None:
    sub = _paid(engine, now, settings, gateway, locale)
    path = _path(settings, sub.customer_id, clock.at)
    [shown] = _consents_shown(client.get(f"{path}/subscriptions/{sub.id}/card").text)
    assert words in shown and "Weekly Media GmbH" in shown and "Basic Monthly" in shown
    r = client.post(f"{path}/subscriptions/{sub.id}/card", data={"test_token": "pm_card_mastercard"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=card_updated")
    with Session(engine) as s:
        update = s.exec(select(CardUpdate)).one()
        consent = s.exec(select(Consent).where(Consent.payment_method_id == update.payment_method_id)).one()
        assert update.terms_version == consent.terms_version == card_updates.TERMS_VERSION
        assert update.terms_text == consent.terms_text == shown


@pytest.mark.parametrize("locale,words", [("hu", "Újra előfizetek"), ("he", "אני נרשם/ת מחדש"),
                                          ("ru", "Я снова подписываюсь"), ("en", "I subscribe again")])
def test_the_reactivation_consent_recorded_is_the_text_shown_in_the_language_shown(
    engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, locale: str, words: str,
) -> None:
    sub = _paid(engine, now, settings, gateway, locale)
    with transaction(engine) as s:
        cancellations.cancel(s, s.get_one(Subscription, sub.id), now=now + timedelta(days=1))
    assert run_cycle(engine, gateway, now=datetime(2026, 2, 16, tzinfo=UTC), settings=settings) \
        .cancellations_effective == 1
    mar1 = Clock(datetime(2026, 3, 1, 10, tzinfo=UTC))
    with _client(engine, settings, gateway, mar1) as c:
        path = _path(settings, sub.customer_id, mar1.at)
        [shown] = _consents_shown(c.get(path).text)
        assert words in shown and "12/2034" in shown
        r = c.post(f"{path}/subscriptions/{sub.id}/reactivate")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=reactivated"), r.text
    with Session(engine) as s:
        consent = s.exec(select(Consent).where(Consent.terms_version == reactivations.TERMS_VERSION)).one()
        assert consent.terms_text == shown


@pytest.mark.parametrize("locale,words", [("hu", "Elfogadom a(z) Basic Monthly új árát"),
                                          ("he", "אני מקבל/ת את המחיר החדש"), ("ru", "Я принимаю новую цену"),
                                          ("en", "I accept the new price")])
def test_the_price_acceptance_recorded_is_the_text_shown_in_the_language_shown(
    client: TestClient, engine: Engine, settings: Settings, gateway: FakeGateway, now: datetime, clock: Clock,
    locale: str, words: str,
) -> None:
    sub = _paid(engine, now, settings, gateway, locale)
    with transaction(engine) as s:
        change_id = pricing.reprice(s, "basic-monthly", amount_minor=2900, now=now + timedelta(days=1)).change.id
    path = _path(settings, sub.customer_id, clock.at)
    [shown] = _consents_shown(client.get(path).text)
    assert words in shown
    r = client.post(f"{path}/subscriptions/{sub.id}/accept-price")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=price_accepted")
    with Session(engine) as s:
        [consent] = s.exec(select(Consent).where(Consent.channel == "web",
                                                 Consent.terms_version == f"price-change:{change_id}")).all()
        assert consent.terms_text == shown


def test_every_refusal_the_page_rewords_is_still_a_message_the_engine_raises() -> None:
    """The account page recognises a service's refusal by its exact English message; a
    reworded message would silently fall back to the general sentence, so each one the
    page rewords must still be written, verbatim, in billing_engine/."""
    from pathlib import Path

    from api.routers.self_service import CUSTOMER_WORDS

    engine_dir = Path(__file__).resolve().parents[2] / "billing_engine"
    source = " ".join(p.read_text() for p in engine_dir.rglob("*.py"))
    missing = [m for m in CUSTOMER_WORDS if f'"{m}"' not in source and f"'{m}'" not in source]
    assert missing == []
