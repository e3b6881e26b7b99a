"""Invoices: one per (subscription, period), enforced by a unique constraint."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_engine import events
from billing_engine.errors import NotFound
from billing_engine.models import Invoice, PaymentAttempt, Plan, Subscription
from billing_engine.periods import Interval, period_bounds


def for_period(session: Session, sub: Subscription, plan: Plan, index: int, *, now: datetime) -> Invoice:
    """The invoice for period ``index`` of ``sub``: the existing one, or a new open one."""
    start, end = period_bounds(sub.billing_anchor, Interval(plan.interval), plan.interval_count, index)
    inv = session.exec(
        select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.period_start == start)
    ).first()
    if inv is not None:
        return inv
    inv = Invoice(
        subscription_id=sub.id, customer_id=sub.customer_id, plan_id=plan.id, period_index=index,
        period_start=start, period_end=end, amount_minor=plan.amount_minor, currency=plan.currency,
        created_at=now,
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
                           "amount_minor": inv.amount_minor, "currency": inv.currency})
    return inv


def get(session: Session, invoice_id: str) -> Invoice:
    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise NotFound(f"no invoice {invoice_id!r}", field="invoice")
    return inv


def list_invoices(
    session: Session, *, subscription_id: str | None = None, customer_id: str | None = None,
    status: str | None = None, limit: int = 100, after: str | None = None,
) -> list[Invoice]:
    q = select(Invoice).order_by(col(Invoice.id)).limit(limit)
    if subscription_id:
        q = q.where(Invoice.subscription_id == subscription_id)
    if customer_id:
        q = q.where(Invoice.customer_id == customer_id)
    if status:
        q = q.where(Invoice.status == status)
    if after:
        q = q.where(col(Invoice.id) > after)
    return list(session.exec(q))


def attempts(session: Session, invoice_id: str) -> list[PaymentAttempt]:
    return list(session.exec(
        select(PaymentAttempt).where(PaymentAttempt.invoice_id == invoice_id).order_by(col(PaymentAttempt.attempt_number))
    ))
