"""Customer e-mails through the outbox (``notifications`` rows).

A notification row is added in the same transaction as the change that causes it
(:func:`enqueue`); ``dedupe_key`` (unique) guarantees an e-mail is queued at most once.
Delivery happens after commit (:func:`deliver_pending`): rendered from
``billing_engine/templates/email/<kind>.{txt,html}`` by :mod:`billing_engine.mailer`
and handed to its transport (SMTP, or ``.eml`` files for the demo). Every e-mail about
a subscription carries its one-click cancel link (body and ``List-Unsubscribe``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_engine import i18n, links, mailer, terms
from billing_engine.db import transaction
from billing_engine.models import Customer, Notification, NotificationStatus, new_id
from billing_engine.settings import Settings, get_settings


class Kind(StrEnum):
    RENEWAL_REMINDER = "renewal_reminder"
    TRIAL_ENDING = "trial_ending"
    RECEIPT = "receipt"
    PAYMENT_FAILED = "payment_failed"
    CARD_EXPIRING = "card_expiring"
    CANCELLATION_CONFIRMED = "cancellation_confirmed"
    CANCELED_INVOLUNTARY = "canceled_involuntary"
    SUBSCRIPTION_REACTIVATED = "subscription_reactivated"
    REFUND = "refund"
    CANCEL_LINK = "cancel_link"  # a fresh cancel link, asked for from an expired one
    PRICE_CHANGE = "price_change"  # a new price, with the date it applies and the cancel link
    SUBSCRIPTION_PAUSED = "subscription_paused"
    SUBSCRIPTION_RESUMED = "subscription_resumed"
    SUBSCRIPTION_PAUSE_SCHEDULED = "subscription_pause_scheduled"  # at once: from, until, next charge, undo
    SUBSCRIPTION_PAUSE_CANCELED = "subscription_pause_canceled"  # a scheduled pause undone before it started
    SUBSCRIPTION_CONFIRMED = "subscription_confirmed"  # the terms at sign-up (and a short trial's reminder)
    MONTHLY_DIGEST = "monthly_digest"  # the month's charges, for plans with receipts = monthly
    YEARLY_SUMMARY = "yearly_summary"  # once a year: what you pay for, the last 12 months, the next charge


ALL_KINDS: tuple[str, ...] = tuple(k.value for k in Kind)


_ENCODER = json.JSONEncoder(default=str, sort_keys=True)  # one for every row


def row(
    kind: str, *, customer_id: str, to_email: str, dedupe_key: str, at: datetime,
    subscription_id: str | None = None, event_id: int | None = None, payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An outbox row as column values (for set-based inserts; :func:`enqueue` uses it too)."""
    return {
        "id": new_id("ntf"), "dedupe_key": dedupe_key, "kind": str(kind), "event_id": event_id,
        "customer_id": customer_id, "subscription_id": subscription_id, "to_email": to_email,
        "payload": _ENCODER.encode(payload or {}), "status": NotificationStatus.PENDING,
        "attempts": 0, "next_attempt_at": at, "created_at": at,
    }


def enqueue(
    session: Session,
    kind: str,
    *,
    customer_id: str,
    dedupe_key: str,
    at: datetime,
    subscription_id: str | None = None,
    event_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> Notification | None:
    """Queue an e-mail unless one with the same ``dedupe_key`` exists. Returns it or None."""
    existing = session.exec(select(Notification).where(Notification.dedupe_key == dedupe_key)).first()
    if existing is not None:
        return None
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    n = Notification(**row(kind, customer_id=customer_id, to_email=customer.email, dedupe_key=dedupe_key, at=at,
                           subscription_id=subscription_id, event_id=event_id, payload=payload))
    try:
        with session.begin_nested():
            session.add(n)
            session.flush()
    except IntegrityError:  # a concurrent worker queued it first
        return None
    return n


# --------------------------------------------------------------------------- delivery
#
# Delivery contract (at-least-once, deduplicated):
#
# 1. claim: in one short transaction, rows that are ``pending`` and due
#    (``next_attempt_at <= now``) are switched to ``sending`` with a compare-and-set
#    UPDATE (on PostgreSQL after ``SELECT ... FOR UPDATE SKIP LOCKED``). While a row is
#    ``sending``, ``next_attempt_at`` holds its lease expiry (wall clock). Two workers
#    can never claim the same row: the loser's UPDATE matches nothing.
# 2. the claim is COMMITTED, then the message is handed to the transport, outside any
#    transaction.
# 3. the outcome is recorded: ``sent`` (+ ``message_id``, ``sent_at``) or, on failure,
#    back to ``pending`` with ``attempts`` counted and an exponential back-off, or
#    ``failed`` after ``MAX_ATTEMPTS`` (or at once when the server refused the address).
#
# The one gap no outbox can close is a crash after the SMTP server accepted the message
# and before step 3 committed. Such a row stays ``sending``; when its lease expires it is
# sent AGAIN. We choose at-least-once over at-most-once: a lost renewal reminder or
# cancellation confirmation (a legal "durable medium" acknowledgement) is worse than a
# rare duplicate, and the duplicate carries the SAME Message-ID
# (``<notification id>@<mail_from domain>``) so mail servers and clients that dedupe by
# Message-ID show it once. Outside that crash window an e-mail is never sent twice:
# dedupe_key (unique) allows one row per cause, and the claim allows one sender per row.

log = logging.getLogger(__name__)

RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1  # 8 tries over ~22 hours, then `failed`
LEASE = timedelta(minutes=10)  # a row `sending` for longer is presumed abandoned


def retry_delay(attempts: int) -> timedelta:
    """Back-off after the ``attempts``-th failed try (1-based)."""
    return RETRY_DELAYS[min(max(attempts, 1), len(RETRY_DELAYS)) - 1]


@dataclass(frozen=True, slots=True)
class _Claim:
    id: str
    attempts: int  # including this one


def _claim(engine: Engine, *, now: datetime, wall: datetime, limit: int, lease: timedelta,
           max_attempts: int) -> list[_Claim]:
    claimed: list[_Claim] = []
    with transaction(engine) as s:
        q = (
            select(Notification)
            .where(or_(
                and_(col(Notification.status) == NotificationStatus.PENDING, col(Notification.next_attempt_at) <= now),
                and_(col(Notification.status) == NotificationStatus.SENDING, col(Notification.next_attempt_at) <= wall),
            ))
            .order_by(col(Notification.next_attempt_at), col(Notification.id))
            .limit(limit)
        )
        if engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        for row in s.exec(q).all():
            cas = (update(Notification)
                   .where(col(Notification.id) == row.id, col(Notification.status) == row.status,
                          col(Notification.attempts) == row.attempts)
                   .execution_options(synchronize_session=False))
            if row.status == NotificationStatus.SENDING and row.attempts >= max_attempts:
                s.execute(cas.values(status=NotificationStatus.FAILED,
                                     last_error="delivery outcome unknown: the sender stopped while sending"))
                continue
            result = s.execute(cas.values(status=NotificationStatus.SENDING, attempts=row.attempts + 1,
                                          next_attempt_at=wall + lease))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(_Claim(row.id, row.attempts + 1))
    return claimed


def _parse_dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_INVOLUNTARY_WHY = {
    "payment_failed": i18n.N_("we could not collect the payment after several tries"),
    "dispute": i18n.N_("the payment was disputed with your bank"),
    "card_expired": i18n.N_("the card on file has expired"),
}
# Why a charge was declined, as the customer reads it in their language, by the gateway's
# decline code (Stripe's codes), instead of the gateway's own English message. Lost or
# stolen card, fraud, "pick up card", "do not honor" and unknown codes read as a plain
# decline: the card network's reason is not told to whoever holds the card (Stripe's
# advice for these codes), and the bank can tell its own customer.
_DECLINE_WHY = {
    "insufficient_funds": i18n.N_("Your card has insufficient funds."),
    "expired_card": i18n.N_("Your card has expired."),
    "incorrect_cvc": i18n.N_("The card's security code is incorrect."),
    "invalid_cvc": i18n.N_("The card's security code is incorrect."),
    "incorrect_number": i18n.N_("The card number is incorrect."),
    "invalid_number": i18n.N_("The card number is incorrect."),
    "invalid_expiry_month": i18n.N_("The card's expiry date is incorrect."),
    "invalid_expiry_year": i18n.N_("The card's expiry date is incorrect."),
    "card_velocity_exceeded": i18n.N_("Your card has reached its spending limit."),
    "withdrawal_count_limit_exceeded": i18n.N_("Your card has reached its spending limit."),
    "authentication_required": i18n.N_("Your bank asks you to confirm this payment."),
    "card_not_supported": i18n.N_("Your card does not support this kind of payment."),
    "currency_not_supported": i18n.N_("Your card does not support this kind of payment."),
    "transaction_not_allowed": i18n.N_("Your card does not support this kind of payment."),
    "processing_error": i18n.N_("Your bank could not process the payment just then."),
    "try_again_later": i18n.N_("Your bank could not process the payment just then."),
    "issuer_not_available": i18n.N_("Your bank could not process the payment just then."),
    "reenter_transaction": i18n.N_("Your bank could not process the payment just then."),
}
_DECLINED = i18n.N_("Your card was declined.")


def decline_reason(tr: i18n.Translator, code: object) -> str:
    """The customer's words for decline ``code`` (any other code: "Your card was declined.")."""
    return tr.gettext(_DECLINE_WHY.get(str(code or ""), _DECLINED))


# a refund's reason (refunds.REASONS) as the customer reads it, not the gateway's code
_REFUND_WHY = {
    "requested_by_customer": i18n.N_("At your request"),
    "duplicate": i18n.N_("Duplicate charge"),
    "fraudulent": i18n.N_("A charge you did not authorise"),
}


def translator_for(customer: Customer | None, settings: Settings) -> i18n.Translator:
    return i18n.for_customer(customer.locale if customer is not None else None, settings.default_locale)


def brand(settings: Settings) -> dict[str, str]:
    """The seller as e-mails and pages name it (settings; see README "Branding")."""
    return {"company_name": settings.company_name or "Billing", "support_email": settings.support_email,
            "company_address": settings.company_address, "company_tax_id": settings.company_tax_id}


def _invoice_ref(session: Session, invoice_id: Any) -> str | None:
    """The invoice's number (``INV-000042``), or its id while it has none (not paid)."""
    from billing_engine.models import Invoice

    if not invoice_id:
        return None
    invoice = session.get(Invoice, str(invoice_id))
    return invoice.number if invoice is not None and invoice.number else str(invoice_id)


def build_context(session: Session, n: Notification, settings: Settings) -> dict[str, Any]:
    """Everything a template may use: the row's payload plus customer, plan, card, links,
    the customer's language (``tr``, ``lang``, ``dir``) and the one set of sentences
    about access and charges (``access``, :func:`billing_engine.terms.sentences`)."""
    from billing_engine.models import PaymentMethod, Plan, Subscription

    payload: dict[str, Any] = json.loads(n.payload or "{}")
    customer = session.get(Customer, n.customer_id) if n.customer_id else None
    sub = session.get(Subscription, n.subscription_id) if n.subscription_id else None
    plan = session.get(Plan, sub.plan_id) if sub is not None else None
    pm = session.get(PaymentMethod, sub.payment_method_id) if sub is not None and sub.payment_method_id else None
    cancel_url = links.make_cancel_url(settings, sub.id, n.created_at) if sub is not None else None
    account_url = links.make_account_url(settings, customer.id, n.created_at) if customer is not None else None
    live = sub is not None and sub.status != "canceled"
    # a row that names its language (a price-change notice: the language its consent text was
    # recorded in, pricing.reprice) is written in it; any other in the customer's
    tr = (i18n.translator(str(payload["locale"])) if n.kind == Kind.PRICE_CHANGE and payload.get("locale")
          else translator_for(customer, settings))
    _ = tr.gettext

    def date(value: Any) -> str:
        return tr.date(_parse_dt(value))

    def money(amount_minor: Any, currency: Any) -> str:
        return tr.money(int(amount_minor), str(currency)) if amount_minor is not None and currency else ""

    def day(instant: Any, written: Any) -> str:
        """The instant as the customer's date; a row queued before instants were stored
        (a pause e-mail carried its day already written, "15 January 2026") keeps that text."""
        return date(instant) if _parse_dt(instant) is not None else str(written or "")

    currency = payload.get("currency") or (plan.currency if plan else None)
    amount_minor = payload.get("amount_minor", plan.amount_minor if plan else None)
    reason = str(payload.get("reason") or "")
    why = _INVOLUNTARY_WHY.get(reason) or (i18n.N_("your card was declined") if reason.startswith("hard_decline") else "")
    charge_at = _parse_dt(payload.get("charge_at") or payload.get("next_charge_at"))
    facts = terms.of(sub, plan, n.created_at, next_charge_at=charge_at) if sub is not None and plan is not None else None
    access = terms.sentences(facts, tr) if facts is not None else {}
    ctx: dict[str, Any] = {
        "kind": n.kind,
        "payload": payload,
        **brand(settings),
        "tr": tr, "lang": tr.tag, "dir": tr.dir,
        "access": access,
        "name": (customer.name if customer and customer.name else "") or _("there"),
        "email": n.to_email,
        "subscription_id": sub.id if sub else None,
        "plan_name": payload.get("plan_name") or (plan.name if plan else _("your plan")),
        "every": terms.every(tr, plan.interval, int(plan.interval_count or 1)) if plan is not None else "",
        "plan_amount": money(plan.amount_minor, plan.currency) if plan else "",
        "amount": money(amount_minor, currency),
        "card": (_("%(brand)s ending %(last4)s", brand=pm.brand.title(), last4=pm.last4)
                 if pm is not None and pm.last4 else _("your card")),
        "cancel_url": cancel_url,
        # the customer's self-service page (subscriptions, card, receipts) and its card update
        "account_url": account_url,
        "card_update_url": f"{account_url}/subscriptions/{sub.id}/card" if account_url and sub and live else None,
        "resubscribe_url": settings.signup_url or cancel_url,
        "link_expires": date(links.expires_at(settings, n.created_at)) if cancel_url else "",
        "charge_date": date(payload.get("charge_at") or (sub.current_period_end if sub else None)),
        "period_start": date(payload.get("period_start")),
        "period_end": date(payload.get("period_end")),
        "next_retry": date(payload.get("next_retry_at")),
        "effective_date": date(payload.get("effective_at")),
        "canceled_date": date(payload.get("canceled_at") or n.created_at),
        "ends_now": bool(payload.get("effective_at")) and _parse_dt(payload.get("effective_at")) == _parse_dt(payload.get("canceled_at")),
        "next_charge_date": date(sub.current_period_end) if sub is not None else "",
        "invoice_id": payload.get("invoice_id"),
        # what the customer's receipts (page, PDF) call the invoice: its gapless number, once paid
        "invoice_ref": _invoice_ref(session, payload.get("invoice_id")),
        # (the gateway's own message is in English and may say more than the card holder should read)
        "decline_message": decline_reason(tr, payload.get("decline_code"))
        if payload.get("decline_code") or payload.get("message") else "",
        "involuntary_why": _(why) if why else _("we could not charge your card"),
        "exp": f"{int(payload['exp_month']):02d}/{payload['exp_year']}" if payload.get("exp_month") else "",
        "last4": payload.get("last4") or (pm.last4 if pm else ""),
        "brand": str(payload.get("brand") or (pm.brand if pm else "card")).title(),
        "refund_reason": _(_REFUND_WHY[reason]) if reason in _REFUND_WHY else reason,
        "trial": bool(payload.get("trial") or payload.get("trial_end")),
        "trial_end": date(payload.get("trial_end")),
        "charges": int(payload.get("charges") or 1) if not isinstance(payload.get("charges"), list) else len(payload["charges"]),
        "charge_lines": [(date(c.get("period_start")), date(c.get("period_end")), money(c.get("amount_minor"), c.get("currency")))
                         for c in (payload["charges"] if isinstance(payload.get("charges"), list) else [])
                         if isinstance(c, dict)],
        "month": tr.month(_parse_dt(payload.get("month"))),
        "year_total": money(payload.get("year_total_minor"), currency),
        "year_charges": int(payload.get("year_charges") or 0),
        "since": date(payload.get("since")),
        # a pause: the day it starts and the day it resumes by itself ("" for none)
        "paused_from": day(payload.get("paused_at"), payload.get("paused_from")),
        "resumes_on": day(payload.get("resumes_at"), payload.get("resumes_on")),
        # a scheduled pause: the day it starts, the renewal it skips, the first charge after it
        "pause_starts": date(payload.get("pauses_at")),
        "skipped_amount": money(payload.get("skipped_amount_minor"), currency),
        "resume_charge_date": date(payload.get("next_charge_at")) if payload.get("amount_minor") is not None else "",
    }
    if n.kind == Kind.PRICE_CHANGE:
        from billing_engine import pricing

        notice = pricing.Notice.from_payload(payload, plan)
        if notice is not None:  # the notice's own words, exactly as its consent recorded them
            ctx["notice"] = pricing.notice_text(tr, notice)
            ctx["old_price"], ctx["new_price"] = pricing.notice_prices(tr, notice)
    return ctx


def compose(session: Session, n: Notification, settings: Settings, now: datetime) -> EmailMessage:
    """The e-mail for outbox row ``n`` (plain text + HTML, List-Unsubscribe headers)."""
    ctx = build_context(session, n, settings)
    rendered = mailer.render(n.kind, ctx, lang=ctx["tr"].lang)
    return mailer.build_message(notification_id=n.id, kind=n.kind, to=n.to_email, rendered=rendered,
                                settings=settings, now=now, cancel_url=ctx["cancel_url"])


def _record_sent(engine: Engine, claim: _Claim, message_id: str, now: datetime) -> None:
    with transaction(engine) as s:
        s.execute(update(Notification)
                  .where(col(Notification.id) == claim.id, col(Notification.status) != NotificationStatus.SENT)
                  .values(status=NotificationStatus.SENT, sent_at=now, message_id=message_id, last_error=None)
                  .execution_options(synchronize_session=False))


def _record_failure(engine: Engine, claim: _Claim, exc: BaseException, now: datetime, max_attempts: int) -> None:
    permanent = isinstance(exc, mailer.DeliveryError) and exc.permanent
    error = f"{type(exc).__name__}: {exc}"[:1000]
    values: dict[str, Any] = {"last_error": error}
    if permanent or claim.attempts >= max_attempts:
        values["status"] = NotificationStatus.FAILED
    else:
        values["status"] = NotificationStatus.PENDING
        values["next_attempt_at"] = now + retry_delay(claim.attempts)
    with transaction(engine) as s:
        s.execute(update(Notification)
                  .where(col(Notification.id) == claim.id, col(Notification.status) == NotificationStatus.SENDING,
                         col(Notification.attempts) == claim.attempts)
                  .values(**values)
                  .execution_options(synchronize_session=False))
    log.warning("notification %s: attempt %d failed: %s", claim.id, claim.attempts, error)


def deliver_pending(
    engine: Engine,
    now: datetime,
    settings: Settings | None = None,
    transport: mailer.Transport | None = None,
    *,
    limit: int = 500,
    batch_size: int = 20,
    lease: timedelta = LEASE,
    max_attempts: int | None = None,
    wall_clock: Callable[[], datetime] | None = None,
) -> int:
    """Send due e-mails from the outbox (after the changes that queued them committed).

    Returns how many were handed to the mail server. Safe to run from several processes
    at once. With ``mail_transport=none`` nothing is claimed (e-mails stay queued)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if settings is None:
        settings = get_settings()
    max_attempts = max_attempts or settings.mail_max_attempts
    own = transport is None
    if transport is None:
        transport = mailer.build_transport(settings)
        if transport is None:
            return 0
    clock = wall_clock or (lambda: datetime.now(UTC))
    sent = tried = 0
    try:
        while tried < limit:
            claims = _claim(engine, now=now, wall=clock(), limit=min(batch_size, limit - tried), lease=lease,
                            max_attempts=max_attempts)
            if not claims:
                break
            for claim in claims:
                tried += 1
                try:
                    with Session(engine) as s:
                        row = s.get(Notification, claim.id)
                        assert row is not None
                        message = compose(s, row, settings, now)
                    transport.send(message)
                except Exception as exc:  # one bad e-mail never stops the others
                    _record_failure(engine, claim, exc, now, max_attempts)
                else:
                    _record_sent(engine, claim, str(message["Message-ID"]), now)
                    sent += 1
    finally:
        if own:
            transport.close()
    return sent


def list_notifications(session: Session, *, status: str | None = None, limit: int = 50,
                       before: str | None = None) -> list[Notification]:
    """Newest first; ``before`` (an id from the previous page) continues after that row."""
    q = select(Notification).order_by(col(Notification.created_at).desc(), col(Notification.id).desc()).limit(limit)
    if status:
        q = q.where(Notification.status == status)
    if before:
        from billing_engine.errors import NotFound

        edge = session.get(Notification, before)
        if edge is None:
            raise NotFound(f"no notification {before!r}", field="before")
        q = q.where(or_(col(Notification.created_at) < edge.created_at,
                        and_(col(Notification.created_at) == edge.created_at, col(Notification.id) < edge.id)))
    return list(session.exec(q))


def status_counts(session: Session) -> dict[str, int]:
    from sqlalchemy import func

    rows = session.exec(select(Notification.status, func.count()).group_by(Notification.status)).all()
    found = {str(status): int(n) for status, n in rows}
    return {s.value: found.get(s.value, 0) for s in NotificationStatus}
