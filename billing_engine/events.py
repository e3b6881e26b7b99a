"""Audit log + outbox: every state change writes an event row in the same transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from billing_engine.models import Event


class EventType(StrEnum):
    CUSTOMER_CREATED = "customer.created"
    CUSTOMER_UPDATED = "customer.updated"
    PLAN_CREATED = "plan.created"
    PLAN_UPDATED = "plan.updated"
    PAYMENT_METHOD_ADDED = "payment_method.added"
    PAYMENT_METHOD_UPDATED = "payment_method.updated"
    PAYMENT_METHOD_DETACHED = "payment_method.detached"
    CONSENT_RECORDED = "consent.recorded"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_ACTIVATED = "subscription.activated"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_PAST_DUE = "subscription.past_due"
    SUBSCRIPTION_RECOVERED = "subscription.recovered"
    SUBSCRIPTION_CANCEL_SCHEDULED = "subscription.cancel_scheduled"
    SUBSCRIPTION_CANCELED = "subscription.canceled"  # took effect (ended)
    SUBSCRIPTION_REACTIVATED = "subscription.reactivated"
    SUBSCRIPTION_PAYMENT_METHOD_CHANGED = "subscription.payment_method_changed"
    SUBSCRIPTION_CANCELLATION_FEEDBACK = "subscription.cancellation_feedback"
    INVOICE_CREATED = "invoice.created"
    INVOICE_PAID = "invoice.paid"
    INVOICE_UNCOLLECTIBLE = "invoice.uncollectible"
    INVOICE_VOIDED = "invoice.voided"
    PAYMENT_ATTEMPTED = "payment.attempted"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_UNKNOWN = "payment.unknown"
    PAYMENT_RECONCILED = "payment.reconciled"
    PAYMENT_NEEDS_REVIEW = "payment.needs_review"
    PAYMENT_REFUND_AFTER_CANCEL = "payment.refund_after_cancel"
    REFUND_FAILED = "refund.failed"
    REFUND_CREATED = "refund.created"
    DISPUTE_CREATED = "dispute.created"
    DISPUTE_CLOSED = "dispute.closed"
    REMINDER_DUE = "subscription.renewal_reminder"
    # admin actions and access (billing_engine.audit): who did what, with which token / OS user
    RUN_CYCLE_COMPLETED = "run_cycle.completed"
    CANCEL_LINK_MINTED = "cancel_link.minted"
    NOTIFICATIONS_SENT = "notifications.sent"
    DASHBOARD_LOGIN = "dashboard.login"
    AUTH_FAILED = "auth.failed"


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def row(
    type: str,
    *,
    at: datetime,
    subscription_id: str | None = None,
    customer_id: str | None = None,
    invoice_id: str | None = None,
    actor: str = "system",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event row as column values (set-based inserts; :func:`record` uses it too).

    ``occurred_at`` is the business time (``now`` / ``--at``, which a simulation or a
    catch-up moves); ``recorded_at`` is always the real clock, so the audit trail shows
    when a row was really written whatever ``at`` said."""
    return {
        "type": str(type), "subscription_id": subscription_id, "customer_id": customer_id,
        "invoice_id": invoice_id, "actor": actor,
        "payload": json.dumps(payload or {}, default=_default, sort_keys=True),
        "occurred_at": at, "created_at": at, "recorded_at": datetime.now(UTC),
    }


def record(
    session: Session,
    type: EventType,
    *,
    at: datetime,
    subscription_id: str | None = None,
    customer_id: str | None = None,
    invoice_id: str | None = None,
    actor: str = "system",
    payload: dict[str, Any] | None = None,
) -> Event:
    """Add an event row to the caller's transaction (flushed, so it has an id)."""
    ev = Event(**row(type, at=at, subscription_id=subscription_id, customer_id=customer_id,
                     invoice_id=invoice_id, actor=actor, payload=payload))
    session.add(ev)
    session.flush()
    return ev


def for_subscription(session: Session, subscription_id: str) -> list[Event]:
    return list(
        session.exec(
            select(Event).where(Event.subscription_id == subscription_id).order_by(col(Event.id))
        )
    )


def payload_of(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.payload or "{}")
    return data
