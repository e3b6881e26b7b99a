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
    PAYMENT_METHOD_EXPIRING = "payment_method.expiring"
    CONSENT_RECORDED = "consent.recorded"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_IMPORTED = "subscription.imported"  # from another biller (billing_engine/imports)
    SUBSCRIPTION_CUT_OVER = "subscription.cut_over"  # the previous biller stopped; the engine charges from here
    SUBSCRIPTION_ACTIVATED = "subscription.activated"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_PAST_DUE = "subscription.past_due"
    SUBSCRIPTION_RECOVERED = "subscription.recovered"
    SUBSCRIPTION_CANCEL_SCHEDULED = "subscription.cancel_scheduled"
    # a cancellation decided with immediate effect (then SUBSCRIPTION_CANCELED as it takes effect)
    SUBSCRIPTION_CANCEL_DECIDED = "subscription.cancel_decided"
    SUBSCRIPTION_TRIAL_ENDING = "subscription.trial_ending"
    SUBSCRIPTION_CANCELED = "subscription.canceled"  # took effect (ended)
    SUBSCRIPTION_REACTIVATED = "subscription.reactivated"
    SUBSCRIPTION_PAYMENT_METHOD_CHANGED = "subscription.payment_method_changed"
    SUBSCRIPTION_CANCELLATION_FEEDBACK = "subscription.cancellation_feedback"
    SUBSCRIPTION_INCOMPLETE_EXPIRED = "subscription.incomplete_expired"  # first charge declined, nothing kept
    SUBSCRIPTION_PLAN_CHANGED = "subscription.plan_changed"
    SUBSCRIPTION_PLAN_CHANGE_SCHEDULED = "subscription.plan_change_scheduled"
    SUBSCRIPTION_PLAN_CHANGE_UNSCHEDULED = "subscription.plan_change_unscheduled"
    SUBSCRIPTION_UPDATED = "subscription.updated"
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
    REFUND_GUARANTEE_GRANTED = "refund.guarantee_granted"
    DISPUTE_CREATED = "dispute.created"
    DISPUTE_CLOSED = "dispute.closed"
    REMINDER_DUE = "subscription.renewal_reminder"
    # lifecycle pricing (pricing.py, pauses.py, coupons.py)
    PLAN_REPRICED = "plan.repriced"
    SUBSCRIPTION_PRICE_CHANGE_NOTICE = "subscription.price_change_notice"
    SUBSCRIPTION_PRICE_CHANGE_ACCEPTED = "subscription.price_change_accepted"  # the customer's click (consent)
    SUBSCRIPTION_PAUSE_SCHEDULED = "subscription.pause_scheduled"
    SUBSCRIPTION_PAUSED = "subscription.paused"
    SUBSCRIPTION_RESUMED = "subscription.resumed"
    COUPON_CREATED = "coupon.created"
    COUPON_UPDATED = "coupon.updated"
    COUPON_REDEEMED = "coupon.redeemed"
    COUPON_REMOVED = "coupon.removed"
    # admin actions and access (billing_engine.audit): who did what, with which token / OS user
    RUN_CYCLE_COMPLETED = "run_cycle.completed"
    CANCEL_LINK_MINTED = "cancel_link.minted"
    NOTIFICATIONS_SENT = "notifications.sent"
    DASHBOARD_LOGIN = "dashboard.login"
    AUTH_FAILED = "auth.failed"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"  # by an admin, or failing for days
    WEBHOOK_ENDPOINT_ENABLED = "webhook_endpoint.enabled"
    WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


# one encoder for every row (``json.dumps(..., default=...)`` builds a new one per call)
_ENCODER = json.JSONEncoder(default=_default, sort_keys=True)


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
        "payload": _ENCODER.encode(payload or {}),
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
