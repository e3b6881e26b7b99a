"""Consent evidence for a chargeback dispute (issue #16).

:func:`find` resolves a subscription (``sub_...``), a card (``pm_...``) or a consent
(``cns_...``) to its consents; :func:`record` is the full record of one consent — who
agreed, when, from where (IP, user agent, channel), the terms (version, SHA-256 and the
text itself, with a check that the text still matches the hash), amount, currency and
interval — plus what followed under it: the card (brand / last4 / expiry, never a
number), the subscriptions it pays for, every charge, and the e-mails that announced
each charge (sign-up confirmation, reminders, receipts) with when they went out.
:func:`to_json` and :func:`to_html` are the export (a standalone HTML page prints to PDF
from any browser).

Retention: consents, the events and the e-mail outbox are append-only / never deleted
by the engine; a consent is kept at least 3 years after the last subscription it covers
ended (``retain_until``; California AB 2863, card-network dispute windows).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session, col, select

from billing_engine import consents
from billing_engine.errors import NotFound, ValidationError
from billing_engine.models import (
    Consent,
    Customer,
    Invoice,
    InvoiceStatus,
    Notification,
    PaymentMethod,
    Plan,
    Subscription,
)
from billing_engine.money import format_minor

RETENTION = timedelta(days=3 * 365 + 1)
EVIDENCE_KINDS = ("subscription_confirmed", "renewal_reminder", "trial_ending", "receipt", "monthly_digest",
                  "yearly_summary", "cancellation_confirmed", "payment_failed", "canceled_involuntary")
TEMPLATE_DIR = Path(__file__).parent / "templates"
_env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape(default=True))


def find(session: Session, ref: str) -> list[Consent]:
    """The consents behind ``ref``: a subscription's covering consent first (then the
    card's others), a card's consents (newest first), or one consent."""
    ref = (ref or "").strip()
    if not ref:
        raise ValidationError("give a subscription (sub_...), payment method (pm_...) or consent (cns_...) id",
                              field="id")
    if ref.startswith("cns_"):
        c = session.get(Consent, ref)
        if c is None:
            raise NotFound(f"no consent {ref!r}", field="consent")
        return [c]
    pm_id, plan = ref, None
    if ref.startswith("sub_"):
        sub = session.get(Subscription, ref)
        if sub is None:
            raise NotFound(f"no subscription {ref!r}", field="subscription")
        if sub.payment_method_id is None:
            raise NotFound(f"subscription {ref!r} has no payment method", field="subscription")
        pm_id, plan = sub.payment_method_id, session.get(Plan, sub.plan_id)
    elif session.get(PaymentMethod, ref) is None:
        raise NotFound(f"no payment method {ref!r}", field="payment_method")
    found = list(session.exec(select(Consent).where(Consent.payment_method_id == pm_id)
                              .order_by(col(Consent.accepted_at).desc())))
    if plan is not None:
        found.sort(key=lambda c: not consents.covers(c, plan))  # the covering one first (stable)
    if not found:
        raise NotFound(f"no consent recorded for {ref!r}", field="consent")
    return found


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def record(session: Session, consent: Consent) -> dict[str, Any]:
    """The full record of ``consent`` and what was charged and e-mailed under it."""
    customer = session.get(Customer, consent.customer_id)
    pm = session.get(PaymentMethod, consent.payment_method_id)
    assert customer is not None and pm is not None
    subs = list(session.exec(select(Subscription).where(Subscription.payment_method_id == pm.id)
                             .order_by(col(Subscription.created_at))))
    sub_ids = [s.id for s in subs]
    plans = {p.id: p for p in session.exec(select(Plan).where(col(Plan.id).in_({s.plan_id for s in subs})))} \
        if subs else {}
    invoices = list(session.exec(select(Invoice).where(col(Invoice.subscription_id).in_(sub_ids),
                                                      Invoice.status == InvoiceStatus.PAID)
                                 .order_by(col(Invoice.paid_at)))) if sub_ids else []
    mails = list(session.exec(select(Notification).where(col(Notification.subscription_id).in_(sub_ids),
                                                        col(Notification.kind).in_(EVIDENCE_KINDS))
                              .order_by(col(Notification.created_at)))) if sub_ids else []
    ended = [s.ended_at for s in subs if s.ended_at is not None]
    live = any(s.ended_at is None for s in subs)
    last = max([consent.accepted_at, consent.revoked_at or consent.accepted_at, *ended])
    text_ok = consent.terms_text is not None and consents.terms_hash(consent.terms_text) == consent.terms_sha256
    return {
        "consent_id": consent.id,
        "customer": {"id": customer.id, "email": customer.email, "name": customer.name},
        "accepted_at": _iso(consent.accepted_at),
        "recorded_at": _iso(consent.created_at),
        "ip_address": consent.ip_address,
        "user_agent": consent.user_agent,
        "channel": consent.channel,
        "terms_version": consent.terms_version,
        "terms_sha256": consent.terms_sha256,
        "terms_text": consent.terms_text,
        "terms_text_matches_hash": text_ok,
        "amount_minor": consent.amount_minor,
        "currency": consent.currency,
        "amount": format_minor(consent.amount_minor, consent.currency),
        "interval": consent.interval,
        "interval_count": consent.interval_count,
        "gateway_setup_id": consent.gateway_setup_id,
        "revoked_at": _iso(consent.revoked_at),
        "retain_until": None if live else _iso(last + RETENTION),
        "retention": "kept at least 3 years after the last subscription on this card ended; never deleted by the engine",
        "payment_method": {"id": pm.id, "gateway": pm.gateway, "brand": pm.brand, "last4": pm.last4,
                           "exp_month": pm.exp_month, "exp_year": pm.exp_year, "status": pm.status},
        "subscriptions": [{
            "id": s.id, "plan_code": plans[s.plan_id].code, "plan_name": plans[s.plan_id].name,
            "amount_minor": plans[s.plan_id].amount_minor, "currency": plans[s.plan_id].currency,
            "interval": plans[s.plan_id].interval, "interval_count": plans[s.plan_id].interval_count,
            "covered_by_this_consent": consents.covers(consent, plans[s.plan_id]) if consent.revoked_at is None
            else None,
            "status": s.status, "created_at": _iso(s.created_at), "canceled_at": _iso(s.canceled_at),
            "ended_at": _iso(s.ended_at), "cancellation_kind": s.cancellation_kind} for s in subs],
        "charges": [{
            "invoice_id": i.id, "subscription_id": i.subscription_id, "period_start": _iso(i.period_start),
            "period_end": _iso(i.period_end), "amount_minor": i.amount_paid_minor, "currency": i.currency,
            "amount": format_minor(i.amount_paid_minor, i.currency), "paid_at": _iso(i.paid_at)} for i in invoices],
        "emails": [{
            "kind": n.kind, "subscription_id": n.subscription_id, "to": n.to_email, "queued_at": _iso(n.created_at),
            "sent_at": _iso(n.sent_at), "status": n.status, "message_id": n.message_id,
            "period_index": json.loads(n.payload or "{}").get("period_index")} for n in mails],
    }


def to_json(rec: dict[str, Any]) -> str:
    return json.dumps(rec, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def to_html(rec: dict[str, Any], *, company_name: str = "", generated_at: datetime | None = None) -> str:
    """A standalone, printable page (save as PDF from the browser) for the dispute file."""
    return _env.get_template("consent_evidence.html").render(r=rec, company_name=company_name,
                                                             generated_at=_iso(generated_at))
