"""Every customer e-mail renders as plain text + HTML with the facts it promises."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_engine import mailer, notifications
from billing_engine.db import transaction
from billing_engine.models import Customer, Notification
from billing_engine.settings import Settings
from tests.factories import make_plan, make_subscription
from tests.notifications.smtp_server import html_of, text_of

K = notifications.Kind


def _payloads(now: datetime) -> dict[str, dict[str, Any]]:
    renew = now + timedelta(days=7)
    return {
        K.RENEWAL_REMINDER: {"charge_at": renew, "amount_minor": 1700, "currency": "USD", "plan_name": "Gold",
                             "trial": False},
        K.TRIAL_ENDING: {"charge_at": renew, "amount_minor": 1700, "currency": "USD", "plan_name": "Gold",
                         "trial": True},
        K.RECEIPT: {"invoice_id": "in_1", "amount_minor": 1700, "currency": "USD", "period_start": now,
                    "period_end": now + timedelta(days=31), "plan_name": "Gold"},
        K.PAYMENT_FAILED: {"invoice_id": "in_1", "attempt_id": "pay_1", "decline_code": "insufficient_funds",
                           "amount_minor": 1700, "currency": "USD", "next_retry_at": now + timedelta(days=1),
                           "message": "Your card has insufficient funds."},
        K.CARD_EXPIRING: {"payment_method_id": "pm_1", "brand": "visa", "last4": "4242", "exp_month": 2,
                          "exp_year": 2026, "charge_at": renew},
        K.CANCELLATION_CONFIRMED: {"effective_at": now + timedelta(days=20), "kind": "voluntary",
                                   "canceled_at": now},
        K.CANCELED_INVOLUNTARY: {"reason": "payment_failed", "invoice_id": "in_1", "amount_minor": 1700,
                                 "currency": "USD"},
        K.SUBSCRIPTION_REACTIVATED: {"current_period_end": now + timedelta(days=20)},
        K.REFUND: {"amount_minor": 500, "currency": "USD", "invoice_id": "in_1", "reason": "requested_by_customer"},
        K.CANCEL_LINK: {"plan_name": "Gold"},
        K.PRICE_CHANGE: {"old_amount_minor": 1700, "amount_minor": 2900, "currency": "USD", "old_amount": "17.00 USD",
                         "new_amount": "29.00 USD", "effective_at": now + timedelta(days=31), "plan_name": "Gold"},
        K.SUBSCRIPTION_PAUSED: {"paused_at": now.isoformat(), "resumes_at": (now + timedelta(days=59)).isoformat(),
                                "amount_minor": 1700, "currency": "USD"},
        K.SUBSCRIPTION_RESUMED: {"charge_at": now, "amount_minor": 1700, "currency": "USD"},
        K.SUBSCRIPTION_PAUSE_SCHEDULED: {"pauses_at": now + timedelta(days=20), "resumes_at": now + timedelta(days=59),
                                         "next_charge_at": now + timedelta(days=59), "amount_minor": 2300,
                                         "skipped_amount_minor": 1700, "currency": "USD"},
        K.SUBSCRIPTION_PAUSE_CANCELED: {"charge_at": now + timedelta(days=20), "amount_minor": 1700, "currency": "USD"},
        K.SUBSCRIPTION_CONFIRMED: {"plan_name": "Gold", "amount_minor": 1700, "currency": "USD", "interval": "month",
                                   "interval_count": 1, "charge_at": renew, "trial_end": renew, "period_index": 0},
        K.MONTHLY_DIGEST: {"month": now, "plan_name": "Gold", "currency": "USD", "amount_minor": 3400, "charges": [
            {"invoice_id": "in_1", "period_start": now, "period_end": renew, "amount_minor": 1700, "currency": "USD"},
            {"invoice_id": "in_2", "period_start": renew, "period_end": renew + timedelta(days=7),
             "amount_minor": 1700, "currency": "USD"}]},
        K.YEARLY_SUMMARY: {"plan_name": "Gold", "currency": "USD", "years": 1, "year_total_minor": 20400,
                           "year_charges": 12, "charge_at": renew, "amount_minor": 1700,
                           "since": now - timedelta(days=365)},
    }


EXPECTED = {
    K.RENEWAL_REMINDER: ["renews automatically on January 22, 2026", "$17.00", "Visa ending 4242"],
    K.TRIAL_ENDING: ["trial of Gold ends on January 22, 2026", "$17.00"],
    K.RECEIPT: ["We charged $17.00", "January 15, 2026 to February 15, 2026", "in_1"],
    K.PAYMENT_FAILED: ["insufficient funds", "try again on January 16, 2026", "What to do"],
    K.CARD_EXPIRING: ["ending 4242", "02/2026", "January 22, 2026"],
    K.CANCELLATION_CONFIRMED: ["canceled", "Access until:  February 4, 2026", "not be charged again", "undo"],
    K.CANCELED_INVOLUNTARY: ["could not collect the payment", "Nothing more will be charged"],
    K.SUBSCRIPTION_REACTIVATED: ["continues", "Next charge"],
    K.PRICE_CHANGE: ["$17.00", "$29.00", "February 15, 2026", "never be charged the new price",
                     "You can also accept it now on your account page:\nhttps://"],
    K.SUBSCRIPTION_PAUSED: ["paused from January 15, 2026", "resumes by itself on March 15, 2026; the next charge is then $17.00"],
    K.SUBSCRIPTION_RESUMED: ["has resumed", "January 15, 2026", "$17.00"],
    K.SUBSCRIPTION_PAUSE_SCHEDULED: ["pauses on February 4, 2026 and resumes by itself on March 15, 2026",
                                     "the charge of $17.00 due on February 4, 2026 is skipped",
                                     "Your next charge after the pause is $23.00 on March 15, 2026.",
                                     "you can undo the pause on your account page"],
    K.SUBSCRIPTION_PAUSE_CANCELED: ["scheduled for your Gold subscription is canceled", "continues as before", "February 4, 2026", "$17.00"],
    K.REFUND: ["refunded $5.00", "Reason: At your request", "5 to 10 business days"],
    K.CANCEL_LINK: ["new link", "works until March 16, 2026"],
    K.SUBSCRIPTION_CONFIRMED: ["Thank you for subscribing to Gold", "$17.00 every month", "Free trial until:",
                               "January 22, 2026 ($17.00)", "Cancel before January 22, 2026",
                               "keep this e-mail as your record"],
    K.MONTHLY_DIGEST: ["receipts for January 2026", "January 15, 2026 – January 22, 2026:  $17.00", "Total: $34.00"],
    K.YEARLY_SUMMARY: ["Once a year", "Paid in the last 12 months: $204.00 (12 charges)",
                       "Next charge: $17.00 on January 22, 2026, then $17.00 every month until you cancel.",
                       "Subscriber since:  January 15, 2025"],
}


def _compose(engine: Engine, now: datetime, settings: Settings, kind: str, plan_name: str = "Gold",
             payload: dict[str, Any] | None = None) -> EmailMessage:
    with transaction(engine) as s:
        plan = make_plan(s, now, code="gold")
        plan.name = plan_name
        sub = make_subscription(s, now, plan=plan)
        sub.current_period_end = now + timedelta(days=20)
        n = notifications.enqueue(s, kind, customer_id=sub.customer_id, subscription_id=sub.id,
                                  dedupe_key=f"t:{kind}", at=now,
                                  payload=_payloads(now)[kind] if payload is None else payload)
        assert n is not None
        nid = n.id
    with Session(engine) as s:
        row = s.get(Notification, nid)
        assert row is not None
        return notifications.compose(s, row, settings, now)


def test_every_kind_has_a_template() -> None:
    templates = sorted(p.stem for p in mailer.TEMPLATE_DIR.glob("*.txt") if not p.stem.startswith("_"))
    assert sorted(notifications.ALL_KINDS) == templates


@pytest.mark.parametrize("kind", notifications.ALL_KINDS)
def test_each_email_renders_text_and_html_with_its_facts(kind: str, sqlite_engine: Engine, now: datetime,
                                                         settings: Settings) -> None:
    msg = _compose(sqlite_engine, now, settings, kind)
    subject = str(msg["Subject"])
    assert subject and "\n" not in subject and "None" not in subject
    text, html = text_of(msg), html_of(msg)
    for body in (text, html):
        assert "None" not in body and "{{" not in body and "{%" not in body
        assert "Hi Ada" in body
    for fact in EXPECTED[kind]:
        assert fact in text, (kind, fact)
    assert '<html lang="en" dir="ltr">' in html
    assert msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    cancel_url = str(msg["List-Unsubscribe"])[1:-1]
    if kind != K.CANCELED_INVOLUNTARY:
        assert cancel_url in text and cancel_url in html


def test_html_escapes_what_admins_typed(sqlite_engine: Engine, now: datetime, settings: Settings) -> None:
    msg = _compose(sqlite_engine, now, settings, K.SUBSCRIPTION_REACTIVATED, plan_name="<b>Gold</b> & Co")
    assert "&lt;b&gt;Gold&lt;/b&gt; &amp; Co" in html_of(msg)
    assert "<b>Gold</b> & Co" in text_of(msg)


def test_message_id_is_stable_per_outbox_row(settings: Settings) -> None:
    assert mailer.message_id_for("ntf_1", settings) == mailer.message_id_for("ntf_1", settings) == "<ntf_1@news.example>"




def test_a_pause_e_mail_queued_with_its_days_already_written_still_renders_them(
    sqlite_engine: Engine, now: datetime, settings: Settings,
) -> None:
    """Rows queued before the pause e-mail stored instants carry the days as text
    ("15 January 2026"): the e-mail keeps that text rather than dropping the days."""
    msg = _compose(sqlite_engine, now, settings, K.SUBSCRIPTION_PAUSED,
                   payload={"paused_from": "15 January 2026", "resumes_on": "15 March 2026"})
    text, html = text_of(msg), html_of(msg)
    assert "paused from 15 January 2026." in text
    assert "resumes by itself on 15 March 2026; the next charge is then $17.00." in text
    assert "15 January 2026" in html and "15 March 2026" in html and "$17.00" in html
    assert "None" not in text and "None" not in html


def test_a_pause_without_a_resume_day_says_it_stays_paused(sqlite_engine: Engine, now: datetime,
                                                            settings: Settings) -> None:
    msg = _compose(sqlite_engine, now, settings, K.SUBSCRIPTION_PAUSED,
                   payload={"paused_at": now.isoformat(), "resumes_at": None})
    text, html = text_of(msg), html_of(msg)
    assert "paused from January 15, 2026." in text
    assert "It stays paused until you ask us to resume it." in text and "resumes by itself" not in text
    assert "Resumes on" not in html and "None" not in text + html


@pytest.mark.parametrize(("lang", "code", "reason"), [
    ("en", "insufficient_funds", "Your card has insufficient funds."),
    ("hu", "insufficient_funds", "A kártyán nincs elegendő fedezet."),
    ("ru", "expired_card", "Срок действия карты истёк."),
    ("he", "authentication_required", "הבנק שלך מבקש לאשר את התשלום הזה."),
    ("hu", "stolen_card", "A kártyát elutasították."),
    ("en", "fraudulent", "Your card was declined."),
    ("en", "a_code_we_do_not_know", "Your card was declined."),
])
def test_a_failed_payment_says_why_in_the_customer_s_language_not_the_gateway_s_english(
        lang: str, code: str, reason: str, sqlite_engine: Engine, now: datetime, settings: Settings) -> None:
    """The reason comes from the decline code, translated; the gateway's own English message
    is not shown (it may also say more than a card holder should read: lost, stolen, fraud)."""
    gateway_says = "Card reported stolen at the issuer (gateway text)"
    with transaction(sqlite_engine) as s:
        sub = make_subscription(s, now, plan=make_plan(s, now, code="gold"))
        customer = s.get(Customer, sub.customer_id)
        assert customer is not None
        customer.locale = lang
        n = notifications.enqueue(s, K.PAYMENT_FAILED, customer_id=sub.customer_id, subscription_id=sub.id,
                                  dedupe_key="t:failed", at=now,
                                  payload={**_payloads(now)[K.PAYMENT_FAILED], "decline_code": code,
                                           "message": gateway_says})
        assert n is not None
        nid = n.id
    with Session(sqlite_engine) as s:
        row = s.get(Notification, nid)
        assert row is not None
        msg = notifications.compose(s, row, settings, now)
    for body in (text_of(msg), html_of(msg)):
        assert f"({reason})" in body
        assert gateway_says not in body
