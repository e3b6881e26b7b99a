"""The pause, resume and refund e-mails write amounts and dates as the receipt e-mail and the
account page do for the same customer (babel, in the customer's locale), in the customer's
language: one subscription, really charged, paused at the end of its period with an
auto-resume, resumed by the run-cycle and refunded."""

from __future__ import annotations

import html as htmllib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import notifications, pauses, refunds
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, Notification, Subscription
from billing_engine.settings import Settings
from tests.factories import Clock, Outbox
from tests.self_service.test_page_languages import (
    SAME_WORDS,
    _client,
    _paid,
    _path,
    _settings,
)

MAR15 = datetime(2026, 3, 15, tzinfo=UTC)

# The day the pause ends (March 15), as the customer reads it: one form per locale.
MARCH_15 = {
    None: "March 15, 2026",
    "en": "March 15, 2026",
    "hu": "2026. március 15.",
    "he_IL": "15 במרץ 2026",
    "ru": "15 марта 2026\u202fг.",
}
# Words of each e-mail that say it is in the customer's language (not the English source)
PAUSED_WORDS = {
    None: ["is paused from", "resumes by itself on"],
    "en": ["is paused from", "resumes by itself on"],
    "hu": ["előfizetése szünetel", "Magától folytatódik ekkor"],
    "he_IL": ["מושהה", "יתחדש אוטומטית"],
    "ru": ["приостановлена", "возобновится автоматически"],
}
RESUMED_WORDS = {
    None: ["has resumed", "Next charge:"],
    "en": ["has resumed", "Next charge:"],
    "hu": ["előfizetése újraindult", "Következő terhelés:"],
    "he_IL": ["חודש", "החיוב הבא:"],
    "ru": ["возобновлена", "Следующее списание:"],
}
REFUND_WORDS = {
    None: ["We refunded", "Visa ending 4242", "Reason: At your request"],
    "en": ["We refunded", "Visa ending 4242", "Reason: At your request"],
    "hu": ["4242 végű Visa", "Az Ön kérésére"],
    "he_IL": ["4242", "לבקשתך"],
    "ru": ["4242", "По вашей просьбе"],
}



def _deliver(engine: Engine, settings: Settings, at: datetime, kind: str) -> list[str]:
    """The plain-text bodies of the e-mails of ``kind`` delivered at ``at``."""
    outbox = Outbox()
    notifications.deliver_pending(engine, at, settings, outbox)
    with Session(engine) as s:
        ids = set(s.exec(select(Notification.message_id)
                         .where(col(Notification.kind) == kind)).all())
    return [htmllib.unescape(str(m.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
            for m in outbox.sent if str(m["Message-ID"]) in ids]


@pytest.mark.parametrize("locale", list(SAME_WORDS))
def test_pause_resume_and_refund_e_mails_write_amounts_and_dates_as_the_receipt_and_the_page(
    engine: Engine, now: datetime, locale: str | None,
) -> None:
    settings, gateway = _settings(), FakeGateway()
    amount, jan15, feb15 = SAME_WORDS[locale]
    mar15 = MARCH_15[locale]
    sub = _paid(engine, now, settings, gateway, locale, pause=True)  # charged Jan 15, renews Feb 15
    receipt = _deliver(engine, settings, now + timedelta(minutes=1), "receipt")
    assert len(receipt) == 1
    for words in (amount, jan15, feb15):
        assert words in receipt[0], (words, receipt[0])

    # Jan 18: a pause from the end of the paid period (Feb 15) until Mar 15
    with transaction(engine) as s:
        pauses.pause(s, s.get_one(Subscription, sub.id), now=now + timedelta(days=3), at_period_end=True,
                     resumes_at=MAR15)
    feb = sub.current_period_end  # Feb 15
    run_cycle(engine, gateway, now=feb, settings=settings)  # the pause takes effect instead of the renewal
    paused = _deliver(engine, settings, feb + timedelta(minutes=1), "subscription_paused")
    assert len(paused) == 1, paused
    for words in (feb15, mar15, amount, *PAUSED_WORDS[locale]):
        assert words in paused[0], (words, paused[0])
    clock = Clock(feb + timedelta(days=1))
    with _client(engine, settings, gateway, clock) as c:
        page = htmllib.unescape(c.get(_path(settings, sub.customer_id, clock.at)).text)
    assert mar15 in page  # "Paused until March 15, 2026": the e-mail's day, the page's way

    # Mar 15: the run-cycle resumes it by itself and charges a period from Mar 15
    run_cycle(engine, gateway, now=MAR15, settings=settings)
    resumed = _deliver(engine, settings, MAR15 + timedelta(minutes=1), "subscription_resumed")
    assert len(resumed) == 1, resumed
    for words in (mar15, amount, *RESUMED_WORDS[locale]):
        assert words in resumed[0], (words, resumed[0])

    # the Jan 15 invoice refunded in full: the refund e-mail's amount is the receipt's
    with Session(engine) as s:
        jan = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)
                     .order_by(col(Invoice.period_start))).first()
        assert jan is not None
    refunds.create(engine, gateway, invoice_id=jan.id, amount_minor=None, reason="requested_by_customer",
                   now=MAR15 + timedelta(hours=1))
    refund = _deliver(engine, settings, MAR15 + timedelta(hours=2), "refund")
    assert len(refund) == 1, refund
    for words in (amount, *REFUND_WORDS[locale]):
        assert words in refund[0], (words, refund[0])
    assert "requested_by_customer" not in refund[0]  # the reason in words, not the gateway's code
    if locale in (None, "en"):  # the old forms are gone
        for mail in (paused[0], resumed[0], refund[0]):
            for old in ("17.00 USD", "15 February 2026", "15 March 2026"):
                assert old not in mail, (old, mail)
    else:  # nothing left in English
        for mail in (paused[0], resumed[0], refund[0]):
            for english in ("paused", "resume", "refunded", "Next charge", "March", "February", "$17.00"):
                assert english not in mail, (english, mail)
