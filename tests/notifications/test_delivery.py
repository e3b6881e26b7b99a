"""The outbox delivers customer e-mails after commit: once per cause, retried, never lost."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import links, mailer, notifications
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Notification, NotificationStatus
from billing_engine.settings import Settings, load_settings
from tests.factories import make_subscription
from tests.notifications.smtp_server import SmtpServer, free_port, html_of, text_of


def _without_sign_up_confirmations(s: Session) -> None:
    """These tests count the e-mails they cause; the sign-up confirmation (tested in
    tests/test_customer_emails.py) is taken out of the outbox."""
    s.execute(delete(Notification).where(col(Notification.kind) == "subscription_confirmed"))


def _subscribe(engine: Engine, now: datetime, email: str = "ada@example.com") -> str:
    with transaction(engine) as s:
        sub_id = make_subscription(s, now, email=email).id
        _without_sign_up_confirmations(s)
        return sub_id


def _deliver(settings: Settings) -> object:
    return lambda eng, at: notifications.deliver_pending(eng, at, settings)


def _rows(engine: Engine) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).order_by(Notification.id)))


def _queue(engine: Engine, now: datetime, n: int) -> list[str]:
    """n customers, each with one receipt queued (a charged first period)."""
    with transaction(engine) as s:
        subs = []
        from tests.factories import make_plan

        plan = make_plan(s, now)
        for i in range(n):
            subs.append(make_subscription(s, now, plan=plan, email=f"c{i}@example.com"))
        ids = [sub.id for sub in subs]
        _without_sign_up_confirmations(s)
        for sub in subs:
            notifications.enqueue(s, notifications.Kind.RECEIPT, customer_id=sub.customer_id, subscription_id=sub.id,
                                  dedupe_key=f"receipt:test:{sub.id}", at=now,
                                  payload={"amount_minor": 1700, "currency": "USD"})
    return ids


def test_receipt_arrives_after_the_first_charge(engine: Engine, now: datetime, smtp: SmtpServer,
                                                 settings: Settings) -> None:
    _subscribe(engine, now)
    summary = run_cycle(engine, FakeGateway(), now=now, settings=settings, deliver=_deliver(settings))
    assert summary.succeeded == 1 and summary.notifications_sent == 1
    [msg] = smtp.inbox.of_kind("receipt")
    assert msg["To"] == "ada@example.com"
    assert msg["Subject"] == "Receipt: $17.00 for Basic Monthly"
    body = text_of(msg)
    assert "We charged $17.00 to Visa ending 4242" in body
    assert "January 15, 2026 to February 15, 2026" in body
    assert smtp.inbox.envelopes[0] == ("billing@news.example", ["ada@example.com"])
    [row] = _rows(engine)
    assert row.status == NotificationStatus.SENT and row.sent_at == now and row.attempts == 1
    assert row.message_id == msg["Message-ID"]


def test_renewal_reminder_arrives_before_the_charge_with_amount_date_and_cancel_link(
    engine: Engine, now: datetime, smtp: SmtpServer, settings: Settings
) -> None:
    sub_id = _subscribe(engine, now)
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=settings, deliver=_deliver(settings))
    assert smtp.inbox.of_kind("renewal_reminder") == []
    # 7 days before the renewal on 15 February
    at = datetime(2026, 2, 8, 9, 0, tzinfo=now.tzinfo)
    summary = run_cycle(engine, gw, now=at, settings=settings, deliver=_deliver(settings))
    assert summary.charged == 0 and summary.reminders_queued == 1
    [msg] = smtp.inbox.of_kind("renewal_reminder")
    assert msg["Subject"] == "Your Basic Monthly subscription renews on February 15, 2026 for $17.00"
    body = text_of(msg)
    assert "We will charge $17.00 to Visa ending 4242" in body
    assert "Cancel before February 15, 2026" in body
    url = next(line for line in body.splitlines() if line.startswith("https://news.example/cancel/"))
    assert links.verify_cancel_token(settings, url.rsplit("/", 1)[1], at) == sub_id
    assert url in html_of(msg)
    # a second run the same day queues and sends nothing new
    run_cycle(engine, gw, now=at + timedelta(hours=1), settings=settings, deliver=_deliver(settings))
    assert len(smtp.inbox.of_kind("renewal_reminder")) == 1


def test_every_email_carries_one_click_unsubscribe_headers_to_its_cancel_link(
    engine: Engine, now: datetime, smtp: SmtpServer, settings: Settings
) -> None:
    sub_id = _subscribe(engine, now)
    run_cycle(engine, FakeGateway(), now=now, settings=settings, deliver=_deliver(settings))
    [msg] = smtp.messages
    header = str(msg["List-Unsubscribe"])
    assert header.startswith("<https://news.example/cancel/") and header.endswith(">")
    assert "=?" not in header  # one plain URL, not RFC 2047-encoded
    assert links.verify_cancel_token(settings, header[1:-1].rsplit("/", 1)[1], now) == sub_id
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Message-ID"].endswith("@news.example>")
    assert msg["Reply-To"] == "help@news.example"


def test_delivering_twice_sends_each_email_once(engine: Engine, now: datetime, smtp: SmtpServer,
                                                settings: Settings) -> None:
    _queue(engine, now, 3)
    assert notifications.deliver_pending(engine, now, settings) == 3
    assert notifications.deliver_pending(engine, now, settings) == 0
    assert notifications.deliver_pending(engine, now + timedelta(days=3), settings) == 0
    assert len(smtp.messages) == 3
    assert len(set(smtp.inbox.message_ids())) == 3


def test_enqueue_with_the_same_dedupe_key_queues_one_email(engine: Engine, now: datetime) -> None:
    sub_id = _subscribe(engine, now)
    with transaction(engine) as s:
        from billing_engine.models import Subscription

        sub = s.get(Subscription, sub_id)
        assert sub is not None
        first = notifications.enqueue(s, "receipt", customer_id=sub.customer_id, dedupe_key="k1", at=now)
        second = notifications.enqueue(s, "receipt", customer_id=sub.customer_id, dedupe_key="k1", at=now)
    assert first is not None and second is None
    assert len(_rows(engine)) == 1


def test_concurrent_deliveries_send_each_email_exactly_once(engine: Engine, now: datetime, smtp: SmtpServer,
                                                            settings: Settings) -> None:
    _queue(engine, now, 12)
    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(notifications.deliver_pending(engine, now, settings, batch_size=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(results) == 12
    ids = smtp.inbox.message_ids()
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {r.status for r in _rows(engine)} == {NotificationStatus.SENT}


def test_smtp_down_then_up_delivers_exactly_once_after_backoff(engine: Engine, now: datetime,
                                                                settings: Settings) -> None:
    down = SmtpServer(port=free_port())  # nothing listens on this port yet
    settings = settings.model_copy(update={"smtp_port": down.port})
    _queue(engine, now, 1)
    assert notifications.deliver_pending(engine, now, settings) == 0
    [row] = _rows(engine)
    assert row.status == NotificationStatus.PENDING and row.attempts == 1
    assert row.next_attempt_at == now + notifications.retry_delay(1)
    assert row.last_error and "refused" in row.last_error.lower()
    down.start()
    try:
        # not due yet: back-off is respected even though the server is back
        assert notifications.deliver_pending(engine, now + timedelta(seconds=30), settings) == 0
        assert down.messages == []
        assert notifications.deliver_pending(engine, now + timedelta(minutes=1), settings) == 1
        assert notifications.deliver_pending(engine, now + timedelta(hours=1), settings) == 0
        assert len(down.messages) == 1
    finally:
        down.stop()
    [row] = _rows(engine)
    assert row.status == NotificationStatus.SENT and row.attempts == 2 and row.last_error is None


def test_a_refused_address_is_marked_failed_without_retrying(engine: Engine, now: datetime, smtp: SmtpServer,
                                                             settings: Settings) -> None:
    _queue(engine, now, 2)
    smtp.inbox.refuse.add("c0@example.com")
    assert notifications.deliver_pending(engine, now, settings) == 1
    by_email = {r.to_email: r for r in _rows(engine)}
    assert by_email["c0@example.com"].status == NotificationStatus.FAILED
    assert "550" in (by_email["c0@example.com"].last_error or "")
    assert by_email["c1@example.com"].status == NotificationStatus.SENT
    assert notifications.deliver_pending(engine, now + timedelta(days=2), settings) == 0


class _BrokenTransport:
    def __init__(self) -> None:
        self.tries = 0

    def send(self, message: object) -> None:
        self.tries += 1
        raise mailer.DeliveryError("451 try again later")

    def close(self) -> None:
        pass


def test_gives_up_after_max_attempts_and_keeps_the_row(engine: Engine, now: datetime, settings: Settings) -> None:
    _queue(engine, now, 1)
    transport = _BrokenTransport()
    at = now
    for _ in range(notifications.MAX_ATTEMPTS + 2):
        notifications.deliver_pending(engine, at, settings, transport)
        at += timedelta(days=1)
    assert transport.tries == notifications.MAX_ATTEMPTS
    [row] = _rows(engine)
    assert row.status == NotificationStatus.FAILED and row.attempts == notifications.MAX_ATTEMPTS
    assert "451" in (row.last_error or "")


def test_retry_delays_grow() -> None:
    delays = [notifications.retry_delay(i) for i in range(1, notifications.MAX_ATTEMPTS + 1)]
    assert delays == sorted(delays) and delays[0] == timedelta(minutes=1)


def test_a_row_stuck_in_sending_is_sent_again_after_its_lease_with_the_same_message_id(
    engine: Engine, now: datetime, smtp: SmtpServer, settings: Settings
) -> None:
    _queue(engine, now, 1)
    [row] = _rows(engine)
    expected_id = mailer.message_id_for(row.id, settings)
    wall = datetime.now(now.tzinfo)
    with transaction(engine) as s:  # a worker claimed it, then died before recording anything
        stuck = s.get(Notification, row.id)
        assert stuck is not None
        stuck.status, stuck.attempts, stuck.next_attempt_at = NotificationStatus.SENDING, 1, wall + timedelta(minutes=10)
    assert notifications.deliver_pending(engine, now, settings) == 0  # lease still held
    later = lambda: wall + timedelta(minutes=11)  # noqa: E731
    assert notifications.deliver_pending(engine, now, settings, wall_clock=later) == 1
    [msg] = smtp.messages
    assert msg["Message-ID"] == expected_id
    [row] = _rows(engine)
    assert row.status == NotificationStatus.SENT and row.attempts == 2


def test_file_transport_writes_one_eml_per_email_and_overwrites_on_redelivery(
    sqlite_engine: Engine, now: datetime, settings: Settings, tmp_path: object
) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "mail"
    _queue(sqlite_engine, now, 2)
    transport = mailer.build_transport(load_settings(mail_transport="file", mail_dir=str(out)))
    assert isinstance(transport, mailer.FileTransport)
    assert notifications.deliver_pending(sqlite_engine, now, settings, transport) == 2
    files = sorted(out.glob("*.eml"))
    assert len(files) == 2 and all(f.name.endswith("-receipt.eml") for f in files)
    with transaction(sqlite_engine) as s:  # pretend the first delivery's result was lost
        for r in s.exec(select(Notification)):
            r.status, r.next_attempt_at = NotificationStatus.PENDING, now
    assert notifications.deliver_pending(sqlite_engine, now, settings, transport) == 2
    assert sorted(out.glob("*.eml")) == files
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in files[0].read_bytes()


def test_transport_none_leaves_emails_queued(sqlite_engine: Engine, now: datetime) -> None:
    _queue(sqlite_engine, now, 1)
    cfg = load_settings(mail_transport="none")
    assert notifications.deliver_pending(sqlite_engine, now, cfg) == 0
    [row] = _rows(sqlite_engine)
    assert row.status == NotificationStatus.PENDING and row.attempts == 0


def test_an_unknown_transport_is_a_configuration_error() -> None:
    import pytest

    from billing_engine.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="BILLING_MAIL_TRANSPORT"):
        load_settings(mail_transport="pigeon")
