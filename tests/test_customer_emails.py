"""Fewer, clearer e-mails (issue #16): the sign-up confirmation, a receipt that is the
next charge's reminder, receipts off / monthly digests per plan, the yearly summary."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import digests, notifications
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Notification
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings(reminder_days_before=7, mail_transport="none", company_name="The Ledger",
                         support_email="help@ledger.example", public_base_url="https://ledger.example",
                         secret_key="emails-secret-" + "e" * 30)


def _kinds(engine: Engine) -> Counter[str]:
    with Session(engine) as s:
        return Counter(n.kind for n in s.exec(select(Notification)))


def _rows(engine: Engine, kind: str) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).where(Notification.kind == kind).order_by(
            Notification.created_at)))  # type: ignore[arg-type]


def _year(engine: Engine, start: datetime, days: int = 365) -> FakeGateway:
    gw = FakeGateway()
    for d in range(days):
        run_cycle(engine, gw, now=start + timedelta(days=d, hours=1), settings=SETTINGS)
    return gw


def test_a_sign_up_sends_the_terms_with_first_charge_trial_end_and_cancel_link(engine: Engine, now: datetime) -> None:
    with transaction(engine) as s:
        plan = make_plan(s, now, trial_days=14)
        sub = make_subscription(s, now, plan=plan)
        sub_id = sub.id
    [row] = _rows(engine, "subscription_confirmed")
    assert row.subscription_id == sub_id and row.created_at == now
    with Session(engine) as s:
        msg = notifications.compose(s, row, SETTINGS, now)
    text = str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    first = now + timedelta(days=14)
    assert f"First charge: {first:%B} {first.day}, {first.year} ($17.00)" in text
    assert "Free trial until:" in text and "$17.00 every month" in text
    assert "https://ledger.example/cancel/" in text and msg["List-Unsubscribe"]


def test_a_short_trial_s_confirmation_is_its_reminder_a_long_one_gets_its_own(sqlite_engine: Engine,
                                                                            now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        short = make_subscription(s, now, plan=make_plan(s, now, code="short", trial_days=7), email="s@example.com")
        long = make_subscription(s, now, plan=make_plan(s, now, code="long", trial_days=30), email="l@example.com")
        ids = {short.id: "short", long.id: "long"}
    gw = _year(sqlite_engine, now, days=32)
    assert len([e for e in gw.ledger if e.kind == "charge"]) == 2  # both trials converted on time
    trial_mails = Counter(ids[n.subscription_id or ""] for n in _rows(sqlite_engine, "trial_ending"))
    assert trial_mails == Counter({"long": 1})  # the 7-day trial's confirmation stated the charge in time
    [conf] = [n for n in _rows(sqlite_engine, "subscription_confirmed") if ids[n.subscription_id or ""] == "short"]
    assert json.loads(conf.payload)["reminds_period_index"] == 0


def test_a_weekly_customer_gets_one_e_mail_per_charge_the_receipt_being_the_reminder(
        sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        make_subscription(s, now, plan=make_plan(s, now, code="weekly", interval="week", amount_minor=200))
    gw = _year(sqlite_engine, now)
    charges = len([e for e in gw.ledger if e.kind == "charge"])
    kinds = _kinds(sqlite_engine)
    assert charges == 53
    assert kinds == Counter({"receipt": 53, "subscription_confirmed": 1})  # was 53 receipts + 52 reminders
    last = _rows(sqlite_engine, "receipt")[-1]
    assert json.loads(last.payload)["reminds_period_index"] == 53


def test_a_monthly_receipt_is_no_reminder_the_reminder_comes_7_days_ahead(sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        make_subscription(s, now, plan=make_plan(s, now))
    _year(sqlite_engine, now, days=70)
    kinds = _kinds(sqlite_engine)
    assert kinds["receipt"] == 3 and kinds["renewal_reminder"] == 2


def test_receipts_off_leaves_the_reminder_per_charge_and_monthly_sends_one_digest_a_month(
        sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        off = make_subscription(s, now, email="off@example.com", plan=make_plan(
            s, now, code="w-off", interval="week", amount_minor=200, receipts="off"))
        digest = make_subscription(s, now, email="digest@example.com", plan=make_plan(
            s, now, code="w-digest", interval="week", amount_minor=200, receipts="monthly"))
        names = {off.id: "off", digest.id: "digest"}
    gw = _year(sqlite_engine, now, days=92)
    with Session(sqlite_engine) as s:
        mails = Counter((names[n.subscription_id or ""], n.kind) for n in s.exec(select(Notification)))
    assert mails[("off", "receipt")] == mails[("digest", "receipt")] == 0
    charges_each = len([e for e in gw.ledger if e.kind == "charge"]) // 2
    assert mails[("off", "renewal_reminder")] in (charges_each - 1, charges_each)  # every renewal (+ the next one)
    assert mails[("digest", "monthly_digest")] == 3  # Jan, Feb, Mar, each once
    digests = [n for n in _rows(sqlite_engine, "monthly_digest") if names[n.subscription_id or ""] == "digest"]
    first = json.loads(digests[0].payload)
    assert first["amount_minor"] == 200 * len(first["charges"]) and len(first["charges"]) >= 3


def test_every_live_subscriber_gets_a_yearly_summary_once_with_the_year_s_total(
        sqlite_engine: Engine, now: datetime) -> None:
    with transaction(sqlite_engine) as s:
        live = make_subscription(s, now, plan=make_plan(s, now), email="live@example.com")
        live_id = live.id
    _year(sqlite_engine, now, days=375)
    [summary] = _rows(sqlite_engine, "yearly_summary")
    p = json.loads(summary.payload)
    assert summary.subscription_id == live_id and p["years"] == 1
    assert p["year_total_minor"] == 12 * 1700 and p["year_charges"] == 12
    with Session(sqlite_engine) as s:
        text = str(notifications.compose(s, summary, SETTINGS, summary.created_at).get_body(
            ("plain",)).get_content())  # type: ignore[union-attr]
    assert "Paid in the last 12 months: $204.00 (12 charges)" in text and "Next charge: $17.00 on" in text
    assert "https://ledger.example/cancel/" in text


def test_digests_and_summaries_are_queued_page_by_page_each_subscriber_once_with_its_own_total(
        sqlite_engine: Engine, now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 2 subscriptions (the run-cycle's pages are 1,000: memory flat at any N):
    every subscriber of 5 gets one digest / one yearly summary, with its own charges only."""
    monkeypatch.setattr(digests, "PAGE", 2)
    ids: dict[str, int] = {}
    with transaction(sqlite_engine) as s:
        plan = make_plan(s, now, code="w-digest", interval="week", amount_minor=200, receipts="monthly")
        for i in range(5):
            ids[make_subscription(s, now, email=f"d{i}@example.com", plan=plan, token="pm_card_visa").id] = 200
        dearer = make_plan(s, now, code="w-digest-dear", interval="week", amount_minor=300, receipts="monthly")
        ids[make_subscription(s, now, email="dear@example.com", plan=dearer).id] = 300
    _year(sqlite_engine, now, days=40)
    per_sub = Counter(n.subscription_id for n in _rows(sqlite_engine, "monthly_digest"))
    assert per_sub == Counter(dict.fromkeys(ids, 1))  # the first month ended once: one digest each
    for n in _rows(sqlite_engine, "monthly_digest"):
        p = json.loads(n.payload)
        assert p["amount_minor"] == ids[n.subscription_id or ""] * len(p["charges"]) > 0
    later = now + timedelta(days=365)
    assert digests.queue_yearly(sqlite_engine, now=later) == 6
    assert digests.queue_yearly(sqlite_engine, now=later) == 6  # offered again, queued once
    summaries = _rows(sqlite_engine, "yearly_summary")
    assert sorted(n.subscription_id or "" for n in summaries) == sorted(ids)
    for n in summaries:
        p = json.loads(n.payload)
        assert p["year_total_minor"] == ids[n.subscription_id or ""] * p["year_charges"] > 0


def test_the_receipt_and_the_refund_e_mail_name_the_invoice_by_its_number(engine: Engine, now: datetime) -> None:
    """The number the customer's receipts page and PDF show (INV-000001), not the internal id."""
    from billing_engine import refunds
    from billing_engine.models import Invoice

    with transaction(engine) as s:
        make_subscription(s, now, plan=make_plan(s, now))
    gw = FakeGateway()
    run_cycle(engine, gw, now=now + timedelta(hours=1), settings=SETTINGS)
    with Session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.status == "paid")).one()
    assert invoice.number and invoice.number.startswith("INV-")
    refunds.create(engine, gw, invoice_id=invoice.id, amount_minor=500, reason="requested_by_customer", now=now)
    for kind in ("receipt", "refund"):
        [row] = _rows(engine, kind)
        with Session(engine) as s:
            msg = notifications.compose(s, row, SETTINGS, now)
        for part in ("plain", "html"):
            body = str(msg.get_body((part,)).get_content())  # type: ignore[union-attr]
            assert invoice.number in body, (kind, part)
            assert invoice.id not in body, (kind, part)
