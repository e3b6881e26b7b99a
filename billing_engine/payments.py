"""Payment attempts: written ``pending`` (and committed) before the gateway is called,
then settled from the gateway's answer. ``settle`` is shared by the run-cycle, the
reconciler and the Stripe webhook, so an outcome is applied the same way whoever
learns it first, and applying it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from billing_engine import dunning, events, notifications, subscriptions
from billing_engine.gateway.protocol import ChargeRequest, ChargeResult, ChargeStatus, DeclineKind
from billing_engine.models import (
    AttemptStatus,
    CancellationKind,
    Customer,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.periods import Interval, monthly_amount
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED_SOFT = "declined_soft"
    DECLINED_HARD = "declined_hard"
    EXHAUSTED = "exhausted"  # soft decline, dunning schedule used up: canceled
    UNKNOWN = "unknown"
    ALREADY_SETTLED = "already_settled"


def idempotency_key(invoice: Invoice, attempt_number: int) -> str:
    """Deterministic, from domain ids; reused on every retry of this attempt."""
    return f"billing:{invoice.id}:attempt:{attempt_number}"


def start_attempt(
    session: Session, sub: Subscription, invoice: Invoice, pm: PaymentMethod, *, now: datetime
) -> PaymentAttempt:
    number = invoice.attempt_count + 1
    attempt = PaymentAttempt(
        invoice_id=invoice.id, subscription_id=sub.id, payment_method_id=pm.id, attempt_number=number,
        idempotency_key=idempotency_key(invoice, number), gateway=pm.gateway, status=AttemptStatus.PENDING,
        amount_minor=invoice.amount_minor, currency=invoice.currency, created_at=now,
    )
    invoice.attempt_count = number
    session.add(invoice)
    session.add(attempt)
    session.flush()
    events.record(session, events.EventType.PAYMENT_ATTEMPTED, at=now, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=invoice.id,
                  payload={"attempt_id": attempt.id, "attempt_number": number,
                           "idempotency_key": attempt.idempotency_key, "amount_minor": attempt.amount_minor,
                           "currency": attempt.currency})
    return attempt


def charge_request(session: Session, attempt: PaymentAttempt) -> ChargeRequest:
    pm = session.get(PaymentMethod, attempt.payment_method_id) if attempt.payment_method_id else None
    sub = session.get(Subscription, attempt.subscription_id)
    assert pm is not None and sub is not None
    cust = session.get(Customer, sub.customer_id)
    return ChargeRequest(
        amount_minor=attempt.amount_minor, currency=attempt.currency, payment_method_token=pm.token,
        idempotency_key=attempt.idempotency_key,
        gateway_customer_id=cust.gateway_customer_id if cust else None,
        description=f"Subscription {sub.id} invoice {attempt.invoice_id}",
        metadata={"invoice_id": attempt.invoice_id, "subscription_id": sub.id, "attempt_id": attempt.id,
                  "idempotency_key": attempt.idempotency_key},
    )


def unresolved(session: Session, subscription_id: str) -> list[PaymentAttempt]:
    return list(session.exec(select(PaymentAttempt).where(
        PaymentAttempt.subscription_id == subscription_id,
        col(PaymentAttempt.status).in_([AttemptStatus.PENDING, AttemptStatus.UNKNOWN]),
    ).order_by(col(PaymentAttempt.created_at))))


def settle(
    session: Session,
    attempt: PaymentAttempt,
    result: ChargeResult,
    *,
    now: datetime,
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    actor: str = "system",
) -> Outcome:
    """Apply the gateway's answer to the attempt, its invoice and its subscription."""
    # On PostgreSQL the run-cycle and the Stripe webhook may settle the same attempt at
    # once: lock the attempt (re-read after the lock) so the second one sees it settled.
    locking = session.bind is not None and session.bind.dialect.name == "postgresql"
    if locking:
        session.refresh(attempt, with_for_update=True)
    if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.REQUIRES_ACTION):
        return Outcome.ALREADY_SETTLED
    invoice = session.get(Invoice, attempt.invoice_id)
    sub = session.get(Subscription, attempt.subscription_id, with_for_update=locking, populate_existing=locking)
    assert invoice is not None and sub is not None
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    attempt.gateway_charge_id = result.gateway_charge_id or attempt.gateway_charge_id
    common = {"attempt_id": attempt.id, "amount_minor": attempt.amount_minor, "currency": attempt.currency,
              "gateway_charge_id": attempt.gateway_charge_id}

    if result.status == ChargeStatus.UNKNOWN:
        attempt.status = AttemptStatus.UNKNOWN
        attempt.message = result.message
        session.add(attempt)
        events.record(session, events.EventType.PAYMENT_UNKNOWN, at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id, invoice_id=invoice.id, payload=common | {"message": result.message})
        return Outcome.UNKNOWN

    attempt.completed_at = now
    if result.status == ChargeStatus.SUCCEEDED:
        attempt.status = AttemptStatus.SUCCEEDED
        session.add(attempt)
        _invoice_paid(session, sub, plan, invoice, attempt, now=now, actor=actor)
        return Outcome.SUCCEEDED

    # declined or requires_action (an off-session charge that needs the customer is a hard decline)
    code = result.decline_code or ("authentication_required" if result.status == ChargeStatus.REQUIRES_ACTION else "generic_decline")
    kind = result.decline_kind or (DeclineKind.HARD if result.status == ChargeStatus.REQUIRES_ACTION else DeclineKind.SOFT)
    attempt.status = AttemptStatus.REQUIRES_ACTION if result.status == ChargeStatus.REQUIRES_ACTION else AttemptStatus.FAILED
    attempt.decline_code = code
    attempt.decline_kind = kind.value
    attempt.message = result.message
    session.add(attempt)
    events.record(session, events.EventType.PAYMENT_FAILED, at=now, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=invoice.id,
                  payload=common | {"decline_code": code, "decline_kind": kind.value, "message": result.message})
    if sub.status == SubscriptionStatus.CANCELED or invoice.status != InvoiceStatus.OPEN:
        return Outcome.DECLINED_HARD if kind == DeclineKind.HARD else Outcome.DECLINED_SOFT
    if invoice.period_index != sub.next_period_index:
        return Outcome.DECLINED_HARD if kind == DeclineKind.HARD else Outcome.DECLINED_SOFT

    sub.failed_attempts += 1
    if sub.dunning_started_at is None:
        sub.dunning_started_at = now
    if kind == DeclineKind.HARD:
        _give_up(session, sub, invoice, reason=f"hard_decline:{code}", now=now)
        return Outcome.DECLINED_HARD
    pm = session.get(PaymentMethod, attempt.payment_method_id) if attempt.payment_method_id else None
    recent = [a.created_at for a in session.exec(select(PaymentAttempt).where(
        PaymentAttempt.payment_method_id == attempt.payment_method_id))] if pm else []
    retry = dunning.next_retry_at(first_failure_at=sub.dunning_started_at, failures=sub.failed_attempts,
                                  schedule_days=schedule_days, brand=pm.brand if pm else None,
                                  recent_attempts=recent)
    if retry is None:
        _give_up(session, sub, invoice, reason="payment_failed", now=now)
        return Outcome.EXHAUSTED
    first_failure = sub.status != SubscriptionStatus.PAST_DUE
    sub.status = SubscriptionStatus.PAST_DUE
    sub.next_retry_at = retry
    sub.updated_at = now
    session.add(sub)
    if first_failure:
        events.record(session, events.EventType.SUBSCRIPTION_PAST_DUE, at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id, invoice_id=invoice.id,
                      payload={"next_retry_at": retry, "decline_code": code})
    notifications.enqueue(session, notifications.Kind.PAYMENT_FAILED, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"payment_failed:{attempt.id}", at=now,
                          payload={"invoice_id": invoice.id, "attempt_id": attempt.id, "decline_code": code,
                                   "amount_minor": invoice.amount_minor, "currency": invoice.currency,
                                   "next_retry_at": retry, "message": result.message})
    return Outcome.DECLINED_SOFT


def _invoice_paid(
    session: Session, sub: Subscription, plan: Plan, invoice: Invoice, attempt: PaymentAttempt,
    *, now: datetime, actor: str,
) -> None:
    already_paid = invoice.status == InvoiceStatus.PAID
    invoice.status = InvoiceStatus.PAID
    invoice.amount_paid_minor = attempt.amount_minor if not already_paid else invoice.amount_paid_minor
    invoice.paid_at = invoice.paid_at or now
    invoice.closed_at = invoice.closed_at or now
    session.add(invoice)
    if sub.activated_at is None or invoice.paid_at < sub.activated_at:
        sub.activated_at = invoice.paid_at  # the first payment: a subscriber from now (reports)
        session.add(sub)
    recovered = invoice.attempt_count > 1
    events.record(session, events.EventType.PAYMENT_SUCCEEDED, at=now, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=invoice.id,
                  payload={"attempt_id": attempt.id, "amount_minor": attempt.amount_minor,
                           "currency": attempt.currency, "gateway_charge_id": attempt.gateway_charge_id})
    if not already_paid:
        events.record(session, events.EventType.INVOICE_PAID, at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id, invoice_id=invoice.id,
                      payload={"amount_minor": invoice.amount_minor, "currency": invoice.currency,
                               "period_start": invoice.period_start, "period_end": invoice.period_end,
                               "recovered_by_dunning": recovered})
    if sub.status == SubscriptionStatus.CANCELED or invoice.period_index != sub.next_period_index:
        # money arrived for a subscription that has since ended (an answer that was lost
        # came in late): recorded, and flagged for an admin to refund.
        events.record(session, "payment.needs_review", at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id, invoice_id=invoice.id,
                      payload={"why": "paid after the subscription ended or out of order"})
        return
    previous = sub.status
    sub.current_period_start = invoice.period_start
    sub.current_period_end = invoice.period_end
    sub.next_period_index = invoice.period_index + 1
    sub.status = SubscriptionStatus.ACTIVE
    sub.failed_attempts = 0
    sub.next_retry_at = None
    sub.dunning_started_at = None
    inv_plan = plan if invoice.plan_id == plan.id else session.get(Plan, invoice.plan_id)
    assert inv_plan is not None
    sub.mrr_minor = monthly_amount(invoice.amount_minor, Interval(inv_plan.interval), inv_plan.interval_count)
    sub.updated_at = now
    session.add(sub)
    etype = {
        SubscriptionStatus.INCOMPLETE: events.EventType.SUBSCRIPTION_ACTIVATED,
        SubscriptionStatus.TRIALING: events.EventType.SUBSCRIPTION_ACTIVATED,
        SubscriptionStatus.PAST_DUE: events.EventType.SUBSCRIPTION_RECOVERED,
    }.get(SubscriptionStatus(previous), events.EventType.SUBSCRIPTION_RENEWED)
    events.record(session, etype, at=now, actor=actor, subscription_id=sub.id, customer_id=sub.customer_id,
                  invoice_id=invoice.id,
                  payload={"previous_status": previous, "period_start": invoice.period_start,
                           "period_end": invoice.period_end})
    notifications.enqueue(session, notifications.Kind.RECEIPT, customer_id=sub.customer_id, subscription_id=sub.id,
                          dedupe_key=f"receipt:{invoice.id}", at=now,
                          payload={"invoice_id": invoice.id, "amount_minor": invoice.amount_minor,
                                   "currency": invoice.currency, "period_start": invoice.period_start,
                                   "period_end": invoice.period_end, "plan_name": plan.name})


def _give_up(session: Session, sub: Subscription, invoice: Invoice, *, reason: str, now: datetime) -> None:
    invoice.status = InvoiceStatus.UNCOLLECTIBLE
    invoice.closed_at = now
    session.add(invoice)
    sub.cancel_at_period_end = False  # an involuntary end overrides a scheduled voluntary one
    sub.cancellation_kind = None
    subscriptions.end(session, sub, kind=CancellationKind.INVOLUNTARY, reason=reason, now=now,
                      effective_at=now, actor="system:dunning")
    notifications.enqueue(session, notifications.Kind.CANCELED_INVOLUNTARY, customer_id=sub.customer_id,
                          subscription_id=sub.id, dedupe_key=f"canceled:{sub.id}", at=now,
                          payload={"reason": reason, "invoice_id": invoice.id,
                                   "amount_minor": invoice.amount_minor, "currency": invoice.currency})
