"""A scheduled pause is confirmed at once by e-mail (from, until, the charge skipped, the first
charge after it, how to undo it), in the customer's language, exactly once per scheduling,
through the self-service page, the admin API and the CLI; taking the scheduled pause back
is confirmed too. A refused request queues nothing."""

from __future__ import annotations

import html as htmllib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import notifications
from billing_engine.cycle import run_cycle
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, Notification, Subscription
from billing_engine.settings import Settings
from tests.api.conftest import AUTH, make_client
from tests.api.conftest import Clock as ApiClock
from tests.cli.inproc import invoke
from tests.factories import Clock, Outbox
from tests.self_service.test_email_languages import MARCH_15
from tests.self_service.test_page_languages import BASE, SAME_WORDS, _client, _paid, _path, _settings

SCHEDULED = "subscription_pause_scheduled"
CANCELED = "subscription_pause_canceled"
MAR15 = datetime(2026, 3, 15, tzinfo=UTC)

# Words that say the confirmation is in the customer's language (not the English source)
SCHEDULED_WORDS = {
    None: ["Your pause is scheduled", "resumes by itself on", "You will not be charged while it is paused",
           "Your next charge after the pause is"],
    "en": ["Your pause is scheduled", "resumes by itself on", "You will not be charged while it is paused",
           "Your next charge after the pause is"],
    "hu": ["A szüneteltetés be van ütemezve", "magától folytatódik", "Amíg szünetel, nem terheljük",
           "A szünet utáni következő terhelés"],
    "he_IL": ["ההשהיה נקבעה", "יתחדש אוטומטית", "לא נחייב אתכם", "החיוב הבא שלך אחרי ההשהיה"],
    "ru": ["Пауза запланирована", "возобновится автоматически", "Пока подписка приостановлена, мы ничего не списываем",
           "Следующее списание после паузы"],
}
CANCELED_WORDS = {
    None: ["is canceled. It continues as before.", "Next charge:"],
    "en": ["is canceled. It continues as before.", "Next charge:"],
    "hu": ["szüneteltetést töröltük", "Következő terhelés:"],
    "he_IL": ["ההשהיה", "בוטלה", "החיוב הבא:"],
    "ru": ["Запланированная пауза", "отменена", "Следующее списание:"],
}
# the account page's button that takes a scheduled pause back, in each language
DONT_PAUSE = {None: "Don't pause", "en": "Don't pause", "hu": "Mégsem szüneteltetem", "he_IL": "ביטול ההשהיה",
              "ru": "Не приостанавливать"}


def _rows(engine: Engine, kind: str) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).where(Notification.kind == kind).order_by(col(Notification.id))))


def _deliver(engine: Engine, settings: Settings, at: datetime, kind: str) -> list[str]:
    """The plain-text bodies of the e-mails of ``kind`` handed to the mail server at ``at``."""
    outbox = Outbox()
    notifications.deliver_pending(engine, at, settings, outbox)
    ids = {n.message_id for n in _rows(engine, kind)}
    return [htmllib.unescape(str(m.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
            for m in outbox.sent if str(m["Message-ID"]) in ids]


@pytest.mark.parametrize("locale", list(SAME_WORDS))
def test_a_customer_who_schedules_a_pause_gets_one_confirmation_with_dates_amount_and_a_working_undo_link(
    engine: Engine, now: datetime, locale: str | None,
) -> None:
    settings, gateway = _settings(), FakeGateway()
    amount, _jan15, feb15 = SAME_WORDS[locale]
    mar15 = MARCH_15[locale]
    sub = _paid(engine, now, settings, gateway, locale, pause=True)  # charged Jan 15, renews Feb 15
    clock = Clock(now + timedelta(days=3))  # Jan 18
    with _client(engine, settings, gateway, clock) as c:
        path = _path(settings, sub.customer_id, clock.at)
        form = {"when": "period_end", "until": "2026-03-15"}
        r = c.post(f"{path}/subscriptions/{sub.id}/pause", data=form)
        assert r.status_code == 303 and r.headers["location"].endswith("?done=pause_scheduled")
        assert len(_rows(engine, SCHEDULED)) == 1  # queued with the change, before any delivery
        r = c.post(f"{path}/subscriptions/{sub.id}/pause", data=form)  # the same click again
        assert r.status_code == 303
    assert len(_rows(engine, SCHEDULED)) == 1

    [mail] = _deliver(engine, settings, clock.at, SCHEDULED)
    for words in (feb15, mar15, amount, *SCHEDULED_WORDS[locale]):
        assert words in mail, (words, mail)
    if locale not in (None, "en"):
        for english in ("pause", "charge", "March", "February", "$17.00"):
            assert english not in mail, (english, mail)
    assert _deliver(engine, settings, clock.at + timedelta(hours=1), SCHEDULED) == []  # sent once

    # the link in the e-mail opens the customer's page, which offers to take the pause back ...
    links = re.findall(rf"{re.escape(BASE)}/account/[A-Za-z0-9_.\-]+", mail)
    assert links, mail
    undo = links[0].removeprefix(BASE)
    clock.at += timedelta(days=2)  # read two days later
    with _client(engine, settings, gateway, clock) as c:
        page = htmllib.unescape(c.get(undo).text)
        assert DONT_PAUSE[locale] in page and DONT_PAUSE[locale] in mail
        r = c.post(f"{undo}/subscriptions/{sub.id}/resume")  # ... and does
        assert r.status_code == 303
    with Session(engine) as s:
        got = s.get_one(Subscription, sub.id)
        assert (got.status, got.pause_at_period_end, got.resumes_at) == ("active", False, None)
    [canceled] = _deliver(engine, settings, clock.at, CANCELED)
    for words in (feb15, amount, *CANCELED_WORDS[locale]):
        assert words in canceled, (words, canceled)
    assert len(_rows(engine, SCHEDULED)) == 1


def test_the_amount_and_day_confirmed_are_those_the_run_cycle_charges_after_the_pause(
    engine: Engine, now: datetime,
) -> None:
    """A new price announced before the pause is in force when it resumes: the confirmation
    quotes what will really be charged (the resume rule), not the plan's old list price."""
    settings, gateway = _settings(), FakeGateway()
    sub = _paid(engine, now, settings, gateway, "en", pause=True)
    clock = ApiClock(now + timedelta(days=3))  # Jan 18
    with make_client(engine, gateway, clock) as c:
        c.headers.update(AUTH)
        r = c.post("/v1/plans/basic-monthly/reprice", json={"amount_minor": 2300, "notice_days": 7})
        assert r.status_code == 201, r.text
        key = {"Idempotency-Key": "pause-once"}
        body = {"at_period_end": True, "resumes_at": "2026-03-15T00:00:00Z"}
        first = c.post(f"/v1/subscriptions/{sub.id}/pause", json=body, headers=key)
        assert first.status_code == 200, first.text
        replay = c.post(f"/v1/subscriptions/{sub.id}/pause", json=body, headers=key)  # a retry of that request
        assert replay.status_code == 200 and replay.json() == first.json()
        again = c.post(f"/v1/subscriptions/{sub.id}/pause", json=body)  # a new request: refused, nothing queued
        assert again.status_code == 409
    [row] = _rows(engine, SCHEDULED)
    [mail] = _deliver(engine, settings, clock.now, SCHEDULED)
    assert "pauses on February 15, 2026 and resumes by itself on March 15, 2026" in mail
    assert "Your next charge after the pause is $23.00 on March 15, 2026." in mail

    run_cycle(engine, gateway, now=sub.current_period_end, settings=settings)  # Feb 15: paused, not charged
    run_cycle(engine, gateway, now=MAR15, settings=settings)  # resumes and charges
    with Session(engine) as s:
        invoices = list(s.exec(select(Invoice).where(Invoice.subscription_id == sub.id)
                               .order_by(col(Invoice.period_start))))
    assert [(i.period_start, i.amount_minor) for i in invoices] == [(now, 1700), (MAR15, 2300)]
    assert json.loads(row.payload)["amount_minor"] == 2300 and [e.amount_minor for e in gateway.ledger] == [1700, 2300]


@pytest.mark.parametrize("body", [
    {"at_period_end": True, "resumes_at": "2026-02-01T00:00:00Z"},  # before the pause starts
    {"at_period_end": True, "resumes_at": "next spring"},
    {"at_period_end": "perhaps"},
])
def test_a_rejected_pause_request_queues_no_e_mail(engine: Engine, now: datetime, body: dict[str, object]) -> None:
    settings, gateway = _settings(), FakeGateway()
    sub = _paid(engine, now, settings, gateway, "en", pause=True)
    with make_client(engine, gateway, ApiClock(now + timedelta(days=3))) as c:
        c.headers.update(AUTH)
        r = c.post(f"/v1/subscriptions/{sub.id}/pause", json=body, headers={"Idempotency-Key": "bad-1"})
        assert r.status_code == 422
    assert _rows(engine, SCHEDULED) == []
    with Session(engine) as s:
        assert s.get_one(Subscription, sub.id).pause_at_period_end is False


@pytest.mark.parametrize("form", [{"when": "period_end", "until": "tomorrow"},
                                  {"when": "period_end", "until": "2026-01-20"},
                                  {"when": "later"}])
def test_a_rejected_pause_on_the_account_page_queues_no_e_mail(
    engine: Engine, now: datetime, form: dict[str, str],
) -> None:
    settings, gateway = _settings(), FakeGateway()
    sub = _paid(engine, now, settings, gateway, "en", pause=True)
    clock = Clock(now + timedelta(days=3))
    with _client(engine, settings, gateway, clock) as c:
        r = c.post(f"{_path(settings, sub.customer_id, clock.at)}/subscriptions/{sub.id}/pause", data=form)
        assert r.status_code == 422
    assert _rows(engine, SCHEDULED) == []


def test_scheduling_from_the_cli_queues_one_confirmation_and_a_refused_retry_none(
    engine: Engine, db_url: str, now: datetime, tmp_path: Path,
) -> None:
    sub_id = _paid(engine, now, _settings(), FakeGateway(), "hu").id  # charged Jan 15, renews Feb 15
    env = {"BILLING_DATABASE_URL": db_url, "BILLING_SECRET_KEY": "cli-pause-" + "k" * 32,
           "BILLING_GATEWAY": "fake"}
    at = "2026-01-20T00:00:00Z"
    bad = invoke(env, tmp_path, "subscription", "pause", sub_id, "--at-period-end", "--until",
                 "2026-01-25T00:00:00Z", "--at", at)
    assert bad.returncode == 2 and "resumes_at" in bad.stderr
    assert _rows(engine, SCHEDULED) == []
    ok = invoke(env, tmp_path, "subscription", "pause", sub_id, "--at-period-end", "--at", at)
    assert ok.returncode == 0, ok.stderr
    again = invoke(env, tmp_path, "subscription", "pause", sub_id, "--at-period-end", "--at", at)
    assert again.returncode == 4
    [row] = _rows(engine, SCHEDULED)
    [mail] = _deliver(engine, _settings(), now + timedelta(days=6), SCHEDULED)
    # no resume date: it says so, and that the date and amount come when it resumes
    assert "2026. február 15." in mail and "17,00\xa0USD" in mail
    assert "magától folytatódik" not in mail
    assert json.loads(row.payload)["skipped_amount_minor"] == 1700


def test_taking_a_scheduled_pause_back_over_the_api_is_confirmed_once(engine: Engine, now: datetime) -> None:
    settings, gateway = _settings(), FakeGateway()
    sub = _paid(engine, now, settings, gateway, "en", pause=True)
    with make_client(engine, gateway, ApiClock(now + timedelta(days=3))) as c:
        c.headers.update(AUTH)
        assert c.post(f"/v1/subscriptions/{sub.id}/pause", json={"at_period_end": True}).status_code == 200
        key = {"Idempotency-Key": "undo-once"}
        assert c.post(f"/v1/subscriptions/{sub.id}/resume", headers=key).status_code == 200
        assert c.post(f"/v1/subscriptions/{sub.id}/resume", headers=key).status_code == 200  # replayed
        assert c.post(f"/v1/subscriptions/{sub.id}/resume").status_code == 409  # nothing left to take back
    [mail] = _deliver(engine, settings, now + timedelta(days=3), CANCELED)
    assert "The pause you scheduled for your Basic Monthly subscription is canceled." in mail
    assert "Next charge:  February 15, 2026" in mail and "$17.00" in mail
    assert len(_rows(engine, CANCELED)) == 1
