"""Languages (issue #16): every customer text is in every catalog (en, ru, he, hu), the
catalogs are compiled from the .po sources at first use (no build step), money and dates
follow the customer's locale, Hebrew is laid out right to left."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import customers, i18n, notifications
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.errors import ValidationError
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Notification
from billing_engine.settings import load_settings
from tests.factories import make_card, make_plan

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("ru", "he", "hu")
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
# texts that read the same in every language (an amount and its cadence, a date and an amount)
SAME_IN_EVERY_LANGUAGE = {"%(amount)s %(every)s", "%(date)s: %(amount)s"}


def _extract(only: tuple[str, ...] | None = None) -> set[object]:
    """The message ids in the sources now: the same extraction as scripts/i18n.sh (babel.cfg's
    mapping), or of the files under ``only`` (glob patterns relative to the repo)."""
    with (ROOT / "babel.cfg").open() as fh:
        method_map, options = parse_mapping_cfg(fh)
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    ids: set[object] = set()
    for file, _line, msg, _comments, _ctx in extract_from_dir(str(ROOT), method_map, options, keywords=keywords):
        if only is None or any(fnmatch(file, pattern) for pattern in only):
            ids.add(msg)
    return ids


def _catalog(lang: str):  # type: ignore[no-untyped-def]
    with (i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


@pytest.mark.parametrize("lang", LANGS)
def test_every_message_id_has_a_translation_in_every_catalog(lang: str) -> None:
    source = _extract()
    assert len(source) > 150
    cat = _catalog(lang)
    translated = {m.id if isinstance(m.id, str) else tuple(m.id): m for m in cat if m.id}
    missing = [m for m in source if m not in translated]
    assert missing == [], f"{lang}: not in the catalog (run scripts/i18n.sh and translate): {missing[:5]}"
    for key, m in translated.items():
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        assert all(s.strip() for s in strings), f"{lang}: empty translation of {key!r}"
        assert not m.fuzzy, f"{lang}: fuzzy translation of {key!r}"
        allowed = set(PLACEHOLDER.findall(key if isinstance(key, str) else " ".join(key))) | {"num"}
        for s in strings:
            assert set(PLACEHOLDER.findall(s)) <= allowed, f"{lang}: unknown placeholder in {s!r}"
        if isinstance(key, str):
            assert set(PLACEHOLDER.findall(key)) == set(PLACEHOLDER.findall(strings[0])), \
                f"{lang}: placeholders of {key!r} differ in {strings[0]!r}"


ACCOUNT_SOURCES = ("api/templates/account*.html", "api/routers/self_service.py", "billing_engine/self_service.py",
                   "billing_engine/card_updates.py", "billing_engine/reactivations.py", "billing_engine/pricing.py",
                   "billing_engine/receipts.py")


@pytest.mark.parametrize("lang", LANGS)
def test_every_text_of_the_account_pages_is_translated(lang: str) -> None:
    """The self-service pages and their consent texts are extracted (babel.cfg) and every one
    of their texts has a non-empty, non-fuzzy translation (not the English left in place) that
    the compiled catalog returns."""
    ids = _extract(ACCOUNT_SOURCES)
    assert len(ids) > 80  # the templates, banners, errors, notes and the three consent texts
    assert any(isinstance(m, str) and m.startswith("I authorise %(seller)s") for m in ids)
    cat = _catalog(lang)
    tr = i18n.translator(lang)
    for msgid in ids:
        m = cat.get(msgid)
        assert m is not None and not m.fuzzy, f"{lang}: {msgid!r} is not translated"
        assert isinstance(m.string, str) and m.string.strip(), f"{lang}: empty translation of {msgid!r}"
        assert tr.gettext(str(msgid)) == m.string, f"{lang}: the compiled catalog does not return {msgid!r}"
        if msgid not in SAME_IN_EVERY_LANGUAGE:
            assert m.string != msgid, f"{lang}: {msgid!r} is left in English"


PRICE_NOTICE_SOURCES = ("billing_engine/templates/email/price_change.*", "billing_engine/pricing.py")


@pytest.mark.parametrize("lang", LANGS)
def test_every_text_of_the_price_change_notice_is_translated(lang: str) -> None:
    """The price-change e-mail and its notice sentences (the consent recorded for it) are
    extracted and each has a real translation, not the English left in place."""
    ids = _extract(PRICE_NOTICE_SOURCES)
    assert "If you cancel before %(date)s, you will never be charged the new price." in ids
    assert "The price of your %(plan)s subscription changes on %(date)s" in ids  # the template's subject
    cat = _catalog(lang)
    tr = i18n.translator(lang)
    for msgid in ids:
        m = cat.get(msgid)
        assert m is not None and not m.fuzzy, f"{lang}: {msgid!r} is not translated"
        assert isinstance(m.string, str) and m.string.strip(), f"{lang}: empty translation of {msgid!r}"
        assert tr.gettext(str(msgid)) == m.string
        if msgid not in SAME_IN_EVERY_LANGUAGE:
            assert m.string != msgid, f"{lang}: {msgid!r} is left in English"
        if "%(date)s" in str(msgid):  # a long date ends in a dot in hu and ru: never at a sentence's end
            assert not m.string.rstrip().endswith("%(date)s."), f"{lang}: {m.string!r} ends on a date"


def test_the_catalogs_compile_from_the_po_sources_without_a_build_step() -> None:
    assert not list(i18n.LOCALE_DIR.rglob("*.mo"))  # nothing compiled in the tree
    i18n.catalog.cache_clear()
    assert i18n.translator("ru").gettext("Cancel my subscription") == "Отменить подписку"
    assert i18n.translator("hu-HU").gettext("Cancel my subscription") == "Előfizetés lemondása"
    assert i18n.translator("xx").gettext("Cancel my subscription") == "Cancel my subscription"  # unknown: English


def test_money_and_dates_follow_the_locale() -> None:
    at = datetime(2026, 1, 15, tzinfo=UTC)
    assert i18n.translator("en").money(2500, "USD") == "$25.00"
    assert i18n.translator("de").money(2500, "EUR") == "25,00\xa0€"
    assert i18n.translator("ru").money(2500, "EUR") == "25,00\xa0€"
    assert i18n.translator("hu").money(98000, "HUF") == "980\xa0Ft"
    assert i18n.translator("en").money(980, "JPY") == "¥980"
    assert i18n.translator("en").date(at) == "January 15, 2026"
    assert i18n.translator("ru").date(at).startswith("15 января 2026")
    assert i18n.translator("hu").date(at) == "2026. január 15."
    assert i18n.translator("he").rtl and not i18n.translator("ru").rtl


def test_a_customer_s_locale_is_validated_and_defaults_from_settings(sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        c = customers.create(s, email="m@example.com", locale="he-IL", now=now)
        assert c.locale == "he_IL"
        with pytest.raises(ValidationError) as exc:
            customers.create(s, email="x@example.com", locale="klingon!", now=now)
        assert exc.value.field == "locale"
        assert customers.set_locale(s, c, "", now=now).locale is None


@pytest.mark.parametrize("lang,hello,price", [
    ("ru", "Здравствуйте, Мария!", "17,00\xa0$ каждый месяц"),
    ("he", "שלום Мария,", "כל חודש"),
    ("hu", "Kedves Мария!", "havonta"),
])
def test_the_sign_up_e_mail_is_in_the_customer_s_language(sqlite_engine: Engine, now: datetime, lang: str,
                                                            hello: str, price: str) -> None:
    settings = load_settings(mail_transport="none", default_locale="en")
    with transaction(sqlite_engine) as s:
        plan = make_plan(s, now)
        c = customers.create(s, email="m@example.com", name="Мария", locale=lang, now=now)
        pm = make_card(s, now, c, plan)
        from billing_engine import subscriptions

        subscriptions.create(s, customer_id=c.id, plan_id=plan.id, payment_method_id=pm.id, now=now)
    run_cycle(sqlite_engine, FakeGateway(), now=now + timedelta(minutes=1), settings=settings)
    with Session(sqlite_engine) as s:
        row = s.exec(select(Notification).where(Notification.kind == "receipt")).one()
        msg = notifications.compose(s, row, settings, now)
    text = str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    html = str(msg.get_body(("html",)).get_content())  # type: ignore[union-attr]
    assert hello in text and price in text
    assert f'lang="{lang}"' in html and (f'dir="{"rtl" if lang == "he" else "ltr"}"' in html)
