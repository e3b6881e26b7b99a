"""Invoices: one per (subscription, period), enforced by a unique constraint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_engine import customers, events, listing, pricing, subscriptions
from billing_engine.errors import NotFound
from billing_engine.models import Invoice, PaymentAttempt, Plan, Subscription


def for_period(session: Session, sub: Subscription, plan: Plan, index: int, *, now: datetime,
               quote: pricing.Quote | None = None) -> Invoice:
    """The invoice for period ``index`` of ``sub``: the existing one, or a new open one billed
    at the price in force for the period less a coupon's discount (:func:`pricing.quote`)."""
    start, end = pricing.bounds(sub, plan, index)
    inv = session.exec(
        select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.period_start == start)
    ).first()
    if inv is not None:
        return inv
    q = quote if quote is not None else pricing.quote(session, sub, plan, index)
    inv = Invoice(
        subscription_id=sub.id, customer_id=sub.customer_id, plan_id=plan.id, period_index=index,
        period_start=start, period_end=end, amount_minor=q.net_minor, currency=plan.currency,
        discount_minor=q.discount_minor, redemption_id=q.redemption_id, created_at=now, updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(inv)
            session.flush()
    except IntegrityError:  # another worker created it: use theirs
        inv = session.exec(
            select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.period_start == start)
        ).one()
        return inv
    events.record(session, events.EventType.INVOICE_CREATED, at=now, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=inv.id,
                  payload={"period_index": index, "period_start": start, "period_end": end,
                           "amount_minor": inv.amount_minor, "currency": inv.currency,
                           "discount_minor": inv.discount_minor, "redemption_id": inv.redemption_id})
    return inv


def get(session: Session, invoice_id: str) -> Invoice:
    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise NotFound(f"no invoice {invoice_id!r}", field="invoice")
    return inv


def list_invoices(
    session: Session, *, subscription_id: str | None = None, customer_id: str | None = None,
    status: str | None = None, limit: int = 100, after: str | None = None, ranges: listing.Ranges | None = None,
) -> list[Invoice]:
    q = listing.apply(select(Invoice).order_by(col(Invoice.id)).limit(limit), Invoice, ranges)
    # a filter naming nothing that exists is an error (field subscription / customer), not an empty page
    if subscription_id:
        subscriptions.get(session, subscription_id)
    if customer_id:
        customer_id = customers.get(session, customer_id).id
    if subscription_id:
        q = q.where(Invoice.subscription_id == subscription_id)
    if customer_id:
        q = q.where(Invoice.customer_id == customer_id)
    if status:
        q = q.where(Invoice.status == status)
    if listing.cursor(after, "in"):
        q = q.where(col(Invoice.id) > after)
    return list(session.exec(q))


def attempts(session: Session, invoice_id: str) -> list[PaymentAttempt]:
    return list(session.exec(
        select(PaymentAttempt).where(PaymentAttempt.invoice_id == invoice_id).order_by(col(PaymentAttempt.attempt_number))
    ))


def summary(inv: Invoice) -> dict[str, Any]:
    """The invoice as shown to admins (CLI ``--json`` and the API); each surface adds its
    display amount."""
    return {
        "id": inv.id, "subscription_id": inv.subscription_id, "customer_id": inv.customer_id,
        "plan_id": inv.plan_id, "period_index": inv.period_index, "period_start": inv.period_start,
        "period_end": inv.period_end, "amount_minor": inv.amount_minor, "currency": inv.currency,
        "gross_minor": inv.amount_minor + inv.discount_minor, "discount_minor": inv.discount_minor,
        "redemption_id": inv.redemption_id, "status": inv.status, "attempt_count": inv.attempt_count, "amount_paid_minor": inv.amount_paid_minor,
        "amount_refunded_minor": inv.amount_refunded_minor, "created_at": inv.created_at,
        "paid_at": inv.paid_at, "closed_at": inv.closed_at, "updated_at": inv.updated_at,
    }


def attempt_summary(a: PaymentAttempt) -> dict[str, Any]:
    """One payment attempt of an invoice as shown to admins (CLI ``--json`` and the API)."""
    return {
        "id": a.id, "invoice_id": a.invoice_id, "subscription_id": a.subscription_id,
        "payment_method_id": a.payment_method_id, "attempt_number": a.attempt_number,
        "idempotency_key": a.idempotency_key, "gateway": a.gateway, "status": a.status,
        "amount_minor": a.amount_minor, "currency": a.currency, "gateway_charge_id": a.gateway_charge_id,
        "decline_code": a.decline_code, "decline_kind": a.decline_kind, "message": a.message,
        "created_at": a.created_at, "completed_at": a.completed_at,
    }
