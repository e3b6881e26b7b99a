"""Refunds: money back on a paid invoice, in two phases like a charge.

1. ``start`` (one transaction, committed): checks the invoice is paid and the amount is
   at most what was collected minus earlier refunds (pending ones count), then writes the
   Refund row ``pending`` with a deterministic idempotency key.
2. ``gateway.refund`` is called with that key (a retry sends the same key, so the
   processor refunds once).
3. ``settle`` (another transaction) applies the answer under the invoice's row lock:
   succeeded -> the invoice's ``amount_refunded_minor`` becomes the sum of its succeeded
   Refund rows (never more than was paid), a ``refund.created`` event and a refund e-mail
   are queued; failed -> the row says so and the amount is refundable again. A refund
   already settled (a parallel retry got there first) is left alone.

``create`` does all three; the caller passes an engine, not a session, because the
pending row must be committed before the gateway is called.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_engine import events, listing, notifications, validation
from billing_engine.db import locks_rows, transaction
from billing_engine.errors import Conflict, GatewayUnavailable, NotFound, ValidationError
from billing_engine.gateway.protocol import (
    GatewayError,
    GatewayUnreachable,
    PaymentGateway,
    RefundRequest,
    RefundResult,
)
from billing_engine.gateway.protocol import RefundStatus as GatewayRefundStatus
from billing_engine.models import AttemptStatus, Invoice, InvoiceStatus, PaymentAttempt, Refund, RefundStatus
from billing_engine.money import format_minor, normalize_currency

REASONS = ("requested_by_customer", "duplicate", "fraudulent")


def idempotency_key(invoice: Invoice, sequence: int) -> str:
    """Deterministic, from domain ids: the n-th refund of this invoice."""
    return f"refund:{invoice.id}:{sequence}"


def key_for_request(invoice_id: str, request_key: str) -> str:
    """A caller-supplied retry key (e.g. the API's Idempotency-Key), bound to the invoice."""
    return f"refund:{invoice_id}:req:{hashlib.sha256(request_key.encode()).hexdigest()[:32]}"


def get(session: Session, refund_id: str) -> Refund:
    r = session.get(Refund, refund_id)
    if r is None:
        raise NotFound(f"no refund {refund_id!r}", field="refund")
    return r


def list_refunds(
    session: Session, *, invoice_id: str | None = None, limit: int = 100, after: str | None = None
) -> list[Refund]:
    q = select(Refund).order_by(col(Refund.id)).limit(limit)
    if invoice_id:
        q = q.where(Refund.invoice_id == invoice_id)
    if listing.cursor(after, "re"):
        q = q.where(col(Refund.id) > after)
    return list(session.exec(q))


def refunded_or_pending(session: Session, invoice_id: str) -> int:
    """Minor units already refunded or on their way back (pending)."""
    total = session.exec(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.invoice_id == invoice_id,
        col(Refund.status).in_([RefundStatus.PENDING, RefundStatus.SUCCEEDED]),
    )).one()
    return int(total)


def refundable(session: Session, invoice: Invoice) -> int:
    """What can still be refunded on ``invoice`` (minor units)."""
    return max(invoice.amount_paid_minor - refunded_or_pending(session, invoice.id), 0)


def _paid_attempt(session: Session, invoice: Invoice) -> PaymentAttempt:
    attempt = session.exec(select(PaymentAttempt).where(
        PaymentAttempt.invoice_id == invoice.id, PaymentAttempt.status == AttemptStatus.SUCCEEDED,
    ).order_by(col(PaymentAttempt.attempt_number).desc())).first()
    if attempt is None or not attempt.gateway_charge_id:
        raise Conflict("the invoice has no successful payment to refund", field="invoice")
    return attempt


def start(
    session: Session,
    *,
    invoice_id: str,
    amount_minor: int | None,
    reason: str | None,
    now: datetime,
    currency: str | None = None,
    idempotency_key_: str | None = None,
) -> Refund:
    """Phase 1: validate and write the pending Refund (the caller commits)."""
    inv = lock_invoice(session, invoice_id)
    if inv is None:
        raise NotFound(f"no invoice {invoice_id!r}", field="invoice")
    if idempotency_key_ is not None:
        existing = session.exec(select(Refund).where(Refund.idempotency_key == idempotency_key_)).first()
        if existing is not None:
            return existing  # a retry of the same request
    if reason is not None:
        reason = reason.strip() or None
    if reason is not None and reason not in REASONS:
        raise ValidationError(f"must be one of {', '.join(REASONS)}", field="reason")
    if currency is not None and normalize_currency(currency) != inv.currency:
        raise ValidationError(f"the invoice is in {inv.currency}, not {normalize_currency(currency)}",
                              field="currency")
    if inv.status != InvoiceStatus.PAID or inv.amount_paid_minor <= 0:
        raise Conflict(f"the invoice is {inv.status}, not paid; nothing to refund", field="invoice")
    attempt = _paid_attempt(session, inv)
    already = refunded_or_pending(session, inv.id)
    remaining = max(inv.amount_paid_minor - already, 0)
    if amount_minor is None:
        if remaining <= 0:
            raise ValidationError("nothing left to refund: the invoice is fully refunded", field="amount_minor")
        amount = remaining
    else:
        amount = validation.int_range(amount_minor, "amount_minor", lo=1, hi=10**12)
        if amount > remaining:
            raise ValidationError(
                f"{format_minor(amount, inv.currency)} {inv.currency} is more than the "
                f"{format_minor(remaining, inv.currency)} {inv.currency} still refundable "
                f"(collected {format_minor(inv.amount_paid_minor, inv.currency)}, "
                f"already refunded or pending {format_minor(already, inv.currency)})",
                field="amount_minor",
            )
    sequence = int(session.exec(select(func.count()).select_from(Refund).where(Refund.invoice_id == inv.id)).one()) + 1
    refund = Refund(
        invoice_id=inv.id, payment_attempt_id=attempt.id, amount_minor=amount, currency=inv.currency,
        status=RefundStatus.PENDING, reason=reason,
        idempotency_key=idempotency_key_ or idempotency_key(inv, sequence), created_at=now,
    )
    session.add(refund)
    session.flush()
    return refund


def refund_request(session: Session, refund: Refund) -> RefundRequest:
    attempt = session.get(PaymentAttempt, refund.payment_attempt_id)
    assert attempt is not None and attempt.gateway_charge_id
    return RefundRequest(
        gateway_charge_id=attempt.gateway_charge_id, amount_minor=refund.amount_minor, currency=refund.currency,
        idempotency_key=refund.idempotency_key, reason=refund.reason,
        metadata={"invoice_id": refund.invoice_id, "refund_id": refund.id},
    )


def lock_invoice(session: Session, invoice_id: str) -> Invoice | None:
    """The invoice, re-read under a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL;
    SQLite's ``BEGIN IMMEDIATE`` already serialises writers). Every change to an
    invoice's refunds happens under this lock, so concurrent requests queue up."""
    return session.get(Invoice, invoice_id, with_for_update=locks_rows(session), populate_existing=True)


def refunded_total(session: Session, invoice_id: str) -> int:
    """Minor units refunded on ``invoice_id``: the sum of its succeeded Refund rows."""
    total = session.exec(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.invoice_id == invoice_id, Refund.status == RefundStatus.SUCCEEDED,
    )).one()
    return int(total)


def settle(session: Session, refund: Refund, result: RefundResult, *, now: datetime, actor: str = "admin") -> Refund:
    """Phase 3: apply the gateway's answer. Applying it twice, even at the same time from
    parallel retries, changes nothing: the refund is re-read under the invoice's lock."""
    inv = lock_invoice(session, refund.invoice_id)
    assert inv is not None
    session.refresh(refund)
    if refund.status != RefundStatus.PENDING:
        return refund
    refund.gateway_refund_id = result.gateway_refund_id or refund.gateway_refund_id
    if result.status == GatewayRefundStatus.PENDING:
        session.add(refund)  # the processor finishes later (webhook / next look-up)
        return refund
    if result.status == GatewayRefundStatus.FAILED:
        refund.status = RefundStatus.FAILED
        session.add(refund)
        events.record(session, events.EventType.REFUND_FAILED, at=now, actor=actor, customer_id=inv.customer_id,
                      subscription_id=inv.subscription_id, invoice_id=inv.id,
                      payload={"refund_id": refund.id, "amount_minor": refund.amount_minor,
                               "currency": refund.currency, "message": result.message})
        return refund
    refund.status = RefundStatus.SUCCEEDED
    refund.succeeded_at = now
    session.add(refund)
    session.flush()
    total = refunded_total(session, inv.id)
    if total > inv.amount_paid_minor:  # start() reserves under the same lock: never happens
        raise Conflict(f"refunds of invoice {inv.id} would exceed the {inv.amount_paid_minor} collected",
                       field="invoice", refund_id=refund.id)
    inv.amount_refunded_minor = total
    inv.updated_at = now
    session.add(inv)
    events.record(session, events.EventType.REFUND_CREATED, at=now, actor=actor, customer_id=inv.customer_id,
                  subscription_id=inv.subscription_id, invoice_id=inv.id,
                  payload={"refund_id": refund.id, "amount_minor": refund.amount_minor, "currency": refund.currency,
                           "reason": refund.reason, "gateway_refund_id": refund.gateway_refund_id})
    notifications.enqueue(session, notifications.Kind.REFUND, customer_id=inv.customer_id,
                          subscription_id=inv.subscription_id, dedupe_key=f"refund:{refund.id}", at=now,
                          payload={"refund_id": refund.id, "invoice_id": inv.id, "amount_minor": refund.amount_minor,
                                   "currency": refund.currency, "reason": refund.reason})
    return refund


def create(
    engine: Engine,
    gateway: PaymentGateway,
    *,
    invoice_id: str,
    amount_minor: int | None,
    reason: str | None,
    now: datetime,
    currency: str | None = None,
    request_key: str | None = None,
    actor: str = "admin",
) -> Refund:
    """Refund ``amount_minor`` (None: everything still refundable) of a paid invoice."""
    key = key_for_request(invoice_id, request_key) if request_key else None
    with transaction(engine) as s:
        refund = start(s, invoice_id=invoice_id, amount_minor=amount_minor, reason=reason, now=now,
                       currency=currency, idempotency_key_=key)
        if refund.status == RefundStatus.FAILED:
            raise Conflict(f"the gateway refused refund {refund.id}; start a new refund", field="invoice",
                           refund_id=refund.id)
        if refund.status != RefundStatus.PENDING:
            return refund
        request = refund_request(s, refund)
    return send(engine, gateway, refund.id, request, now=now, actor=actor)


def send(
    engine: Engine, gateway: PaymentGateway, refund_id: str, request: RefundRequest | None = None,
    *, now: datetime, actor: str = "admin",
) -> Refund:
    """Phase 2 + 3 for a pending refund (also: retry one left pending by a crash)."""
    if request is None:
        with transaction(engine) as s:
            refund = get(s, refund_id)
            if refund.status != RefundStatus.PENDING:
                return refund
            request = refund_request(s, refund)
    try:
        result = gateway.refund(request)
    except GatewayUnreachable as exc:
        raise GatewayUnavailable(
            f"the payment gateway could not be reached; refund {refund_id} stays pending, retry it: {exc}"
        ) from None
    except GatewayError as exc:
        result = RefundResult(status=GatewayRefundStatus.FAILED, message=str(exc)[:900])
    with transaction(engine) as s:
        refund = get(s, refund_id)
        settle(s, refund, result, now=now, actor=actor)
    if refund.status == RefundStatus.FAILED:
        raise Conflict(f"the gateway refused refund {refund_id}: {result.message}", field="invoice",
                       refund_id=refund_id)
    return refund


def summary(r: Refund) -> dict[str, Any]:
    """The refund as shown to admins (CLI ``--json`` and the API); each surface adds its display amount."""
    return {"id": r.id, "invoice_id": r.invoice_id, "payment_attempt_id": r.payment_attempt_id,
            "amount_minor": r.amount_minor, "currency": r.currency, "status": r.status, "reason": r.reason,
            "idempotency_key": r.idempotency_key, "gateway_refund_id": r.gateway_refund_id,
            "created_at": r.created_at, "succeeded_at": r.succeeded_at}
