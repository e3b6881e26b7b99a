"""Cancellations: cancel (now or at period end), end, undo, feedback, involuntary ends.

Where is churn kind decided? Here. Every path that ends a subscription goes through
:func:`end`, which stamps ``cancellation_kind`` (voluntary / involuntary) at that
moment; reports read that one field and never infer it later.

* :func:`cancel` — the customer (or an admin on their behalf) asks to leave.
* :func:`end` — a cancellation takes effect (access ends, open invoices closed).
* :func:`end_involuntarily` — the ONE rule for involuntary churn (hard decline,
  dunning exhausted, card expired or detached, dispute lost): end now, close the open
  invoice as uncollectible, tell the customer with a resubscribe / card-update link.
* :func:`can_undo` / :func:`undo` — take back a cancellation while the paid period
  lasts; the customer pages ask :func:`can_undo` before showing the button.
* :func:`record_feedback` — the optional "why did you leave?" answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from billing_engine import events, notifications, validation
from billing_engine.errors import InvalidTransition, ValidationError
from billing_engine.models import (
    ENDED_STATUSES,
    CancellationKind,
    CancellationReason,
    Invoice,
    InvoiceStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)

INVOLUNTARY_REASONS: tuple[str, ...] = (
    CancellationReason.PAYMENT_FAILED.value,
    CancellationReason.DISPUTE.value,
    CancellationReason.CARD_EXPIRED.value,
)
VOLUNTARY_REASONS: tuple[str, ...] = tuple(r.value for r in CancellationReason if r.value not in INVOLUNTARY_REASONS)
HARD_DECLINE_PREFIX = "hard_decline:"
INVOLUNTARY_REASON_PREFIXES: tuple[str, ...] = (*INVOLUNTARY_REASONS, HARD_DECLINE_PREFIX)
CUSTOMER = "customer"


def _check_kind_reason(kind: str, reason: str | None) -> tuple[CancellationKind, str | None]:
    try:
        k = CancellationKind(kind)
    except ValueError:
        raise ValidationError("must be 'voluntary' or 'involuntary'", field="kind") from None
    if reason is not None:
        reason = reason.strip() or None
    if reason is None:
        return k, None
    if k == CancellationKind.VOLUNTARY and reason not in VOLUNTARY_REASONS:
        raise ValidationError(f"must be one of {', '.join(VOLUNTARY_REASONS)}", field="reason")
    if k == CancellationKind.INVOLUNTARY and not reason.startswith(INVOLUNTARY_REASON_PREFIXES):
        raise ValidationError(
            "must be payment_failed, hard_decline:<code>, dispute or card_expired", field="reason"
        )
    return k, reason


@dataclass(frozen=True)
class CancelResult:
    subscription: Subscription
    changed: bool  # False when the same cancellation was already in place
    effective_at: datetime  # when access ends


def cancel(
    session: Session,
    sub: Subscription,
    *,
    kind: str = CancellationKind.VOLUNTARY,
    reason: str | None = None,
    comment: str | None = None,
    at_period_end: bool | None = None,
    now: datetime,
    actor: str = CUSTOMER,
) -> CancelResult:
    """Cancel. Voluntary cancellations end at period end unless the plan (or the caller)
    says immediately; an unpaid subscription (incomplete / past_due) ends at once."""
    k, reason = _check_kind_reason(kind, reason)
    if comment is not None:
        comment = validation.text(comment, "comment", max_length=2000) or None
    if sub.status == SubscriptionStatus.CANCELED:
        raise InvalidTransition("the subscription is already canceled", field="subscription")
    if sub.status in ENDED_STATUSES:
        raise InvalidTransition(f"the subscription is {sub.status}: it never started", field="subscription")
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    if at_period_end is None:
        at_period_end = not plan.cancel_immediately
    unpaid = sub.status in (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.PAST_DUE)
    if at_period_end and not unpaid and sub.current_period_end > now:
        if sub.cancel_at_period_end and not (
                k == CancellationKind.INVOLUNTARY and sub.cancellation_kind == CancellationKind.VOLUNTARY):
            return CancelResult(sub, False, sub.current_period_end)
        # new, or an admin's involuntary decision replacing the customer's own scheduled one
        sub.cancel_at_period_end = True
        sub.canceled_at = now
        sub.cancellation_kind = k.value
        sub.cancellation_reason = reason
        sub.cancellation_comment = comment
        sub.canceled_by = actor
        sub.updated_at = now
        session.add(sub)
        events.record(session, events.EventType.SUBSCRIPTION_CANCEL_SCHEDULED, at=now, actor=actor,
                      subscription_id=sub.id, customer_id=sub.customer_id,
                      payload={"kind": k.value, "reason": reason, "effective_at": sub.current_period_end})
        _confirm(session, sub, effective_at=sub.current_period_end, now=now)
        return CancelResult(sub, True, sub.current_period_end)
    if k == CancellationKind.INVOLUNTARY:  # an admin records churn the customer did not choose
        end_involuntarily(session, sub, reason=reason, now=now, actor=actor, comment=comment)
        return CancelResult(sub, True, now)
    end(session, sub, kind=k.value, reason=reason, comment=comment, now=now, effective_at=now, actor=actor)
    _confirm(session, sub, effective_at=now, now=now)
    return CancelResult(sub, True, now)


def _confirm(session: Session, sub: Subscription, *, effective_at: datetime, now: datetime) -> None:
    """The durable-medium acknowledgement of a cancellation (an e-mail), once per cancel."""
    notifications.enqueue(
        session, notifications.Kind.CANCELLATION_CONFIRMED, customer_id=sub.customer_id,
        subscription_id=sub.id, dedupe_key=f"cancel_confirmed:{sub.id}:{now.isoformat()}", at=now,
        payload={"effective_at": effective_at, "kind": sub.cancellation_kind, "canceled_at": now},
    )


def end(
    session: Session,
    sub: Subscription,
    *,
    kind: str,
    reason: str | None,
    now: datetime,
    effective_at: datetime,
    comment: str | None = None,
    actor: str = "system",
) -> Subscription:
    """Cancellation takes effect: access ends at ``effective_at``; open invoices are voided
    (or marked uncollectible when a charge was tried)."""
    if sub.status in ENDED_STATUSES:
        raise InvalidTransition(f"the subscription is already {sub.status}", field="subscription")
    if not sub.cancel_at_period_end or sub.cancellation_kind is None:
        sub.canceled_at = now
        sub.cancellation_kind = kind
        sub.cancellation_reason = reason
        sub.cancellation_comment = comment
        sub.canceled_by = actor
        events.record(session, events.EventType.SUBSCRIPTION_CANCEL_DECIDED, at=now, actor=actor,
                      subscription_id=sub.id, customer_id=sub.customer_id,
                      payload={"kind": kind, "reason": reason, "effective_at": effective_at})
    previous = sub.status
    sub.status = SubscriptionStatus.CANCELED
    sub.ended_at = effective_at
    sub.next_retry_at = None
    sub.updated_at = now
    session.add(sub)
    for inv in session.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.OPEN)):
        from billing_engine.payments import unresolved_query  # payments settles through this module

        in_flight = session.exec(unresolved_query(invoice_id=inv.id)).first()
        if in_flight is not None:
            continue  # the reconciler settles it first (and refunds a charge that lands)
        inv.status = InvoiceStatus.UNCOLLECTIBLE if inv.attempt_count else InvoiceStatus.VOID
        inv.closed_at = now
        inv.updated_at = now
        session.add(inv)
        events.record(session, events.EventType.INVOICE_UNCOLLECTIBLE if inv.attempt_count else events.EventType.INVOICE_VOIDED,
                      at=now, subscription_id=sub.id, customer_id=sub.customer_id, invoice_id=inv.id,
                      payload={"amount_minor": inv.amount_minor, "currency": inv.currency})
    events.record(session, events.EventType.SUBSCRIPTION_CANCELED, at=now, actor=sub.canceled_by or actor,
                  subscription_id=sub.id, customer_id=sub.customer_id,
                  payload={"kind": sub.cancellation_kind, "reason": sub.cancellation_reason,
                           "ended_at": effective_at, "previous_status": previous})
    return sub


def end_involuntarily(
    session: Session,
    sub: Subscription,
    *,
    reason: str | None,
    now: datetime,
    actor: str,
    details: dict[str, Any] | None = None,
    comment: str | None = None,
) -> bool:
    """End ``sub`` now as involuntary churn and tell the customer. The one home of this rule.

    An involuntary end overrides a scheduled voluntary one (the customer's card failed
    before their chosen end date). Returns False when the subscription had already ended."""
    if sub.status in ENDED_STATUSES:
        return False
    sub.cancel_at_period_end = False
    sub.cancellation_kind = None
    end(session, sub, kind=CancellationKind.INVOLUNTARY, reason=reason, comment=comment, now=now, effective_at=now,
        actor=actor)
    _tell_involuntary(session, sub, now=now, details=details)
    return True


def _tell_involuntary(session: Session, sub: Subscription, *, now: datetime, details: dict[str, Any] | None = None) -> None:
    notifications.enqueue(session, notifications.Kind.CANCELED_INVOLUNTARY, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"canceled:{sub.id}", at=now,
                          payload={"reason": sub.cancellation_reason, **(details or {})})


def end_at_period_end(session: Session, sub: Subscription, *, now: datetime) -> None:
    """A cancellation scheduled for period end takes effect (no charge for the next period).
    An involuntary one (an admin's, e.g. a dispute) tells the customer like every other."""
    end(session, sub, kind=sub.cancellation_kind or CancellationKind.VOLUNTARY, reason=sub.cancellation_reason,
        now=now, effective_at=sub.current_period_end, actor=sub.canceled_by or CUSTOMER)
    if sub.cancellation_kind == CancellationKind.INVOLUNTARY:
        _tell_involuntary(session, sub, now=now)


def can_undo(sub: Subscription, now: datetime, *, actor: str = CUSTOMER) -> bool:
    """May ``actor`` take back this cancellation now? (The pages ask before showing Undo.)

    While the paid period lasts, a scheduled cancellation (or a voluntary one that ended
    access early) can be undone. A customer may undo only a voluntary cancellation made
    through their own link: not an admin's decision, nor involuntary churn."""
    if now >= sub.current_period_end:
        return False
    if actor == CUSTOMER and (sub.cancellation_kind != CancellationKind.VOLUNTARY or sub.canceled_by != CUSTOMER):
        return False
    if sub.cancel_at_period_end and sub.status != SubscriptionStatus.CANCELED:
        return True
    return (
        sub.status == SubscriptionStatus.CANCELED
        and sub.cancellation_kind == CancellationKind.VOLUNTARY
        and sub.ended_at is not None
        and sub.ended_at < sub.current_period_end
        and sub.next_period_index > 0
    )


def undo(session: Session, sub: Subscription, *, now: datetime, actor: str = CUSTOMER) -> Subscription:
    """Take back a cancellation while the paid period lasts (see :func:`can_undo`)."""
    if not can_undo(sub, now, actor=actor):
        if sub.status == SubscriptionStatus.CANCELED:
            raise InvalidTransition("the subscription has ended; subscribe again", field="subscription")
        if not sub.cancel_at_period_end:
            raise InvalidTransition("the subscription is not canceled", field="subscription")
        if now >= sub.current_period_end:
            raise InvalidTransition("the period has ended; subscribe again", field="subscription")
        raise InvalidTransition("this cancellation can only be undone by support", field="subscription")
    if sub.status == SubscriptionStatus.CANCELED:
        sub.status = SubscriptionStatus.ACTIVE if not sub.trial_end or sub.trial_end <= sub.current_period_start else SubscriptionStatus.TRIALING
        sub.ended_at = None
    sub.cancel_at_period_end = False
    sub.canceled_at = None
    sub.cancellation_kind = None
    sub.cancellation_reason = None
    sub.cancellation_comment = None
    sub.canceled_by = None
    sub.updated_at = now
    session.add(sub)
    events.record(session, events.EventType.SUBSCRIPTION_REACTIVATED, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=sub.customer_id,
                  payload={"current_period_end": sub.current_period_end})
    notifications.enqueue(session, notifications.Kind.SUBSCRIPTION_REACTIVATED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"reactivated:{sub.id}:{now.isoformat()}", at=now,
                          payload={"current_period_end": sub.current_period_end})
    return sub


undo_cancel = undo  # the name used before the cancellations module existed


def record_feedback(
    session: Session, sub: Subscription, *, reason: str, comment: str | None, now: datetime, actor: str = CUSTOMER
) -> Subscription:
    """The optional 'why did you leave?' answer, asked after cancelling."""
    if sub.cancellation_kind != CancellationKind.VOLUNTARY:
        raise InvalidTransition("feedback is only taken for a voluntary cancellation", field="subscription")
    _, reason_ok = _check_kind_reason(CancellationKind.VOLUNTARY, reason)
    if reason_ok is None:
        raise ValidationError(f"must be one of {', '.join(VOLUNTARY_REASONS)}", field="reason")
    sub.cancellation_reason = reason_ok
    sub.cancellation_comment = validation.text(comment, "comment", max_length=2000) or None
    sub.updated_at = now
    session.add(sub)
    events.record(session, events.EventType.SUBSCRIPTION_CANCELLATION_FEEDBACK, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=sub.customer_id,
                  payload={"reason": reason_ok, "comment": sub.cancellation_comment})
    return sub
