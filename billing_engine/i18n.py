"""Languages: gettext catalogs (babel) and locale-aware money and dates.

Catalogs live in ``billing_engine/locale/<lang>/LC_MESSAGES/messages.po`` (the source,
in git). They are compiled when first used, in memory (babel's ``write_mo`` into a
buffer): a fresh clone, an installed wheel and ``make test`` need no build step and no
generated file. ``messages.pot`` is the template; ``scripts/i18n.sh`` re-extracts it
and updates the catalogs (pybabel extract / update).

A customer's language is ``customers.locale`` (API / CLI field), else
``BILLING_DEFAULT_LOCALE``. Money and dates are formatted by babel for that locale
(``$25.00`` in English, ``25,00 €`` in German); Hebrew pages and e-mails are laid out
right to left (:attr:`Translator.rtl`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations

from billing_engine.money import exponent

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
SUPPORTED: tuple[str, ...] = ("en", "ru", "he", "hu")
DEFAULT = "en"


def N_(message: str) -> str:
    """Mark a text for the catalogs where it is defined; it is translated where shown."""
    return message


def available() -> tuple[str, ...]:
    """The languages with a catalog (English is the source language)."""
    found = {p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")}
    return tuple(sorted(found | {"en"}))


def parse(value: str | None) -> Locale | None:
    """A babel Locale for ``value`` ("ru", "he-IL", "hu_HU"), None when it is not one."""
    if not value or not isinstance(value, str) or len(value) > 20:
        return None
    try:
        return Locale.parse(value.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def normalize(value: str | None) -> str | None:
    """The canonical spelling of a locale (``he_IL``) or None when it is not a locale."""
    loc = parse(value)
    return str(loc) if loc is not None else None


@lru_cache(maxsize=64)
def catalog(lang: str) -> NullTranslations:
    """The compiled catalog of ``lang`` (its language part), compiled in memory from the
    .po file on first use; no catalog: the English source texts."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as fh:
        cat = read_po(fh, locale=lang, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, cat, use_fuzzy=False)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


@dataclass(frozen=True)
class Translator:
    """Texts, money and dates in one locale."""

    locale: Locale
    translations: NullTranslations

    @property
    def lang(self) -> str:
        return str(self.locale.language)

    @property
    def tag(self) -> str:
        """BCP 47 tag for ``lang=""`` attributes."""
        return str(self.locale).replace("_", "-")

    @property
    def rtl(self) -> bool:
        return bool(self.locale.character_order == "right-to-left")

    @property
    def dir(self) -> str:
        return "rtl" if self.rtl else "ltr"

    def gettext(self, message: str, **values: object) -> str:
        text = self.translations.ugettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        text = self.translations.ungettext(singular, plural, n)
        return text % {"num": n, **values}

    def money(self, amount_minor: int, currency: str) -> str:
        value = Decimal(int(amount_minor)).scaleb(-exponent(currency))
        return str(format_currency(value, currency, locale=self.locale))

    def date(self, at: datetime | None) -> str:
        return str(format_date(at, format="long", locale=self.locale)) if at is not None else ""

    def month(self, at: datetime | None) -> str:
        """"January 2026" (the stand-alone month name)."""
        return str(format_date(at, format="LLLL y", locale=self.locale)) if at is not None else ""

    def datetime(self, at: datetime | None) -> str:
        return str(format_datetime(at, format="medium", tzinfo=None, locale=self.locale)) if at is not None else ""


@lru_cache(maxsize=64)
def translator(value: str | None = None) -> Translator:
    """The translator for ``value`` (a locale string); English when unknown."""
    loc = parse(value) or Locale.parse(DEFAULT)
    return Translator(locale=loc, translations=catalog(str(loc.language)))


def for_customer(customer_locale: str | None, default: str | None) -> Translator:
    return translator(customer_locale or default or DEFAULT)


