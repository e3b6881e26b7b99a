"""Payment attempts: written ``pending`` (and committed) before the gateway is called,
then settled from the gateway's answer. ``settle`` is shared by the run-cycle, the
reconciler and the Stripe webhook, so an outcome is applied the same way whoever
learns it first, and applying it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from billing_engine import cancellations, dunning, events, invoice_numbers, notifications, proration, refunds, reminders
from billing_engine.db import among, locks_rows
from billing_engine.gateway.protocol import ChargeRequest, ChargeResult, ChargeStatus, DeclineKind
from billing_engine.models import (
    AttemptStatus,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.periods import Interval, monthly_amount
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE, Settings


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED_SOFT = "declined_soft"
    DECLINED_HARD = "declined_hard"
    EXHAUSTED = "exhausted"  # soft decline, dunning schedule used up: canceled
    UNKNOWN = "unknown"
    ALREADY_SETTLED = "already_settled"
    REFUNDING = "refunding"  # money arrived after the customer cancelled: refund queued


UNRESOLVED = (AttemptStatus.PENDING, AttemptStatus.UNKNOWN)
# Written as a literal, identical to the predicate of the partial index
# ``ix_attempts_unresolved``, so the planner can always use that index (a bound parameter
# list cannot prove the predicate under a generic plan).
UNRESOLVED_SQL = "payment_attempts.status IN ('pending', 'unknown')"
AUTO_REFUND_PREFIX = "auto_refund:"


def unresolved_query(*, subscription_ids: Sequence[str] | None = None, invoice_id: str | None = None) -> SelectOfScalar[PaymentAttempt]:
    """THE query for "an attempt whose outcome we do not know yet" (pending or unknown).

    Anything that must not start a new charge, end an invoice or settle blindly asks
    this: the run-cycle's due condition and planner, cancellations, the dry run."""
    q = select(PaymentAttempt).where(text(UNRESOLVED_SQL))
    if subscription_ids is not None:
        q = q.where(among(col(PaymentAttempt.subscription_id), subscription_ids))
    if invoice_id is not None:
        q = q.where(PaymentAttempt.invoice_id == invoice_id)
    return q.order_by(col(PaymentAttempt.created_at), col(PaymentAttempt.id))




def idempotency_key_for(invoice_id: str, attempt_number: int) -> str:
    """Deterministic, from domain ids; reused on every retry of this attempt."""
    return f"billing:{invoice_id}:attempt:{attempt_number}"


def idempotency_key(invoice: Invoice, attempt_number: int) -> str:
    return idempotency_key_for(invoice.id, attempt_number)


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
    invoice.updated_at = now
    session.add(invoice)
    session.add(attempt)
    session.flush()
    events.record(session, events.EventType.PAYMENT_ATTEMPTED, at=now, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=invoice.id,
                  payload={"attempt_id": attempt.id, "attempt_number": number,
                           "idempotency_key": attempt.idempotency_key, "amount_minor": attempt.amount_minor,
                           "currency": attempt.currency})
    return attempt


def charge_request(attempt: Any, token: str, gateway_customer_id: str | None) -> ChargeRequest:
    """The gateway request of an attempt (a row, an ORM object or the dict being
    inserted): the same on every send and re-send, so its idempotency key holds."""
    return ChargeRequest(
        amount_minor=attempt.amount_minor, currency=attempt.currency, payment_method_token=token,
        idempotency_key=attempt.idempotency_key, gateway_customer_id=gateway_customer_id,
        description=f"Subscription {attempt.subscription_id} invoice {attempt.invoice_id}",
        metadata={"invoice_id": attempt.invoice_id, "subscription_id": attempt.subscription_id,
                  "attempt_id": attempt.id, "idempotency_key": attempt.idempotency_key},
    )


def settle(
    session: Session,
    attempt: PaymentAttempt,
    result: ChargeResult,
    *,
    now: datetime,
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    actor: str = "system",
    number_prefix: str | None = None,
    settings: Settings | None = None,
) -> Outcome:
    """Apply the gateway's answer to the attempt, its invoice and its subscription
    (a paid invoice takes the next number of ``number_prefix``'s series; default: the
    settings' ``invoice_number_prefix``)."""
    # On PostgreSQL the run-cycle and the Stripe webhook may settle the same attempt at
    # once: lock the attempt (re-read after the lock) so the second one sees it settled.
    locking = locks_rows(session)
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
    if result.status == ChargeStatus.SUCCEEDED:
        return _invoice_paid(session, sub, plan, invoice, attempt, result, now=now, actor=actor,
                             number_prefix=number_prefix, settings=settings)
    common = {"attempt_id": attempt.id, "amount_minor": attempt.amount_minor, "currency": attempt.currency,
              "gateway_charge_id": attempt.gateway_charge_id}

    if result.status == ChargeStatus.UNKNOWN:
        attempt.status = AttemptStatus.UNKNOWN
        attempt.message = result.message
        session.add(attempt)
        events.record(session, events.EventType.PAYMENT_UNKNOWN, at=now, subscription_id=sub.id,
                      customer_id=sub.customer_id, invoice_id=invoice.id, payload=common | {"message": result.message})
        return Outcome.UNKNOWN

    code, kind = mark_declined(session, sub, invoice, attempt, result, now=now)
    if invoice.kind == InvoiceKind.PRORATION:  # a plan change not paid: it does not happen
        void_invoice(session, invoice, now=now, why=f"plan change not paid: {code}")
        return Outcome.DECLINED_HARD if kind == DeclineKind.HARD else Outcome.DECLINED_SOFT
    if sub.status == SubscriptionStatus.CANCELED or invoice.status != InvoiceStatus.OPEN:
        if invoice.status == InvoiceStatus.OPEN:  # ended while this charge was in flight: close it now
            invoice.status = InvoiceStatus.UNCOLLECTIBLE
            invoice.closed_at = now
            invoice.updated_at = now
            session.add(invoice)
            events.record(session, events.EventType.INVOICE_UNCOLLECTIBLE, at=now, subscription_id=sub.id,
                          customer_id=sub.customer_id, invoice_id=invoice.id,
                          payload={"amount_minor": invoice.amount_minor, "currency": invoice.currency})
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


def mark_declined(
    session: Session, sub: Subscription, invoice: Invoice, attempt: PaymentAttempt, result: ChargeResult,
    *, now: datetime,
) -> tuple[str, DeclineKind]:
    """The attempt was declined (or needs the customer's action): record it and say why.
    What that means for the subscription is the caller's rule (dunning, or a first charge)."""
    attempt.gateway_charge_id = result.gateway_charge_id or attempt.gateway_charge_id
    attempt.completed_at = now
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
                  payload={"attempt_id": attempt.id, "amount_minor": attempt.amount_minor, "currency": attempt.currency,
                           "gateway_charge_id": attempt.gateway_charge_id, "decline_code": code,
                           "decline_kind": kind.value, "message": result.message})
    return code, kind


@dataclass(kw_only=True)
class Paid:
    """What a successful charge changes: the one home of the "invoice paid" rule.

    Computed from values (:func:`paid_changes`); applied row by row by :func:`settle`
    and set-based by :mod:`billing_engine.charging` for a whole batch."""

    attempt: dict[str, Any]
    invoice: dict[str, Any]
    subscription: dict[str, Any] = field(default_factory=dict)  # empty: the subscription does not move
    events: list[tuple[events.EventType, dict[str, Any]]] = field(default_factory=list)
    receipt: dict[str, Any] | None = None
    refund: bool = False  # money for a period the customer had cancelled: refund it
    end_at_period_end: bool = False  # ... and the promised end takes effect now


def paid_changes(
    sub: Subscription, invoice: Invoice, attempt: PaymentAttempt, result: ChargeResult, *,
    invoice_plan: Plan, plan_name: str, now: datetime, plan: Plan | None = None,
    settings: Settings | None = None, lead: timedelta | None = None,
) -> Paid:
    """``lead``: the plan's reminder lead (:func:`reminders.reminder_lead`), when the
    caller already knows it (a batch settle computes it once per plan)."""
    already_paid = invoice.status == InvoiceStatus.PAID
    paid_at = invoice.paid_at or now
    charge_id = result.gateway_charge_id or attempt.gateway_charge_id
    out = Paid(
        attempt={"status": AttemptStatus.SUCCEEDED, "completed_at": now, "gateway_charge_id": charge_id},
        invoice={"status": InvoiceStatus.PAID, "paid_at": paid_at, "closed_at": invoice.closed_at or now, "updated_at": now,
                 "amount_paid_minor": invoice.amount_paid_minor if already_paid else attempt.amount_minor},
    )
    if not already_paid:
        out.events.append((events.EventType.INVOICE_PAID, {
            "attempt_id": attempt.id, "amount_minor": invoice.amount_minor, "currency": invoice.currency,
            "gateway_charge_id": charge_id, "period_start": invoice.period_start,
            "period_end": invoice.period_end, "recovered_by_dunning": invoice.attempt_count > 1}))
    if invoice.kind == InvoiceKind.PRORATION:
        return _proration_paid(out, sub, invoice, attempt, invoice_plan, charge_id)
    cancelled_before = sub.status == SubscriptionStatus.CANCELED or (
        sub.cancel_at_period_end and invoice.period_start >= sub.current_period_end)
    if cancelled_before:
        # The customer cancelled while this charge was in flight (or its answer was
        # lost until after they left): what they were promised holds. Refund it.
        out.refund = True
        out.end_at_period_end = sub.status != SubscriptionStatus.CANCELED and sub.current_period_end <= now
        out.events.append((events.EventType.PAYMENT_REFUND_AFTER_CANCEL, {
            "attempt_id": attempt.id, "amount_minor": attempt.amount_minor, "currency": attempt.currency,
            "gateway_charge_id": charge_id, "why": "charged for a period the customer had cancelled"}))
        return out
    if sub.activated_at is None or paid_at < sub.activated_at:
        out.subscription["activated_at"] = paid_at  # the first payment: a subscriber from now (reports)
        out.subscription["updated_at"] = now
    if invoice.period_index != sub.next_period_index:
        out.events.append((events.EventType.PAYMENT_NEEDS_REVIEW, {
            "attempt_id": attempt.id, "why": "paid out of order (an older answer arrived late)"}))
        return out
    out.subscription.update({
        "current_period_start": invoice.period_start, "current_period_end": invoice.period_end,
        "next_period_index": invoice.period_index + 1, "status": SubscriptionStatus.ACTIVE,
        "failed_attempts": 0, "next_retry_at": None, "dunning_started_at": None, "updated_at": now,
        "mrr_minor": monthly_amount(invoice.amount_minor, Interval(invoice_plan.interval), invoice_plan.interval_count),
    })
    etype = {
        SubscriptionStatus.INCOMPLETE: events.EventType.SUBSCRIPTION_ACTIVATED,
        SubscriptionStatus.TRIALING: events.EventType.SUBSCRIPTION_ACTIVATED,
        SubscriptionStatus.PAST_DUE: events.EventType.SUBSCRIPTION_RECOVERED,
    }.get(SubscriptionStatus(sub.status), events.EventType.SUBSCRIPTION_RENEWED)
    out.events.append((etype, {"previous_status": sub.status, "period_start": invoice.period_start,
                               "period_end": invoice.period_end}))
    # The receipt states the next charge; sent inside the reminder window it is that
    # charge's reminder (reminders.counts_as_reminder). Per plan receipts can be off or
    # a monthly digest: then the reminder pass sends the reminder.
    plan = plan or invoice_plan
    out.subscription.update({"reminded_period_index": sub.reminded_period_index, "reminded_at": sub.reminded_at})
    if (plan.receipts or "each") != "each":
        return out
    out.receipt = {"invoice_id": invoice.id, "amount_minor": invoice.amount_minor, "currency": invoice.currency,
                   "period_start": invoice.period_start, "period_end": invoice.period_end, "plan_name": plan_name,
                   "period_index": invoice.period_index, "next_charge_at": invoice.period_end,
                   "next_amount_minor": plan.amount_minor}
    if lead is None:
        lead = reminders.reminder_lead(plan, trial=False, settings=settings)
    if not sub.cancel_at_period_end and reminders.counts_as_reminder(now, invoice.period_end, lead):
        out.subscription.update({"reminded_period_index": invoice.period_index + 1, "reminded_at": now})
        out.receipt["reminds_period_index"] = invoice.period_index + 1
    return out


def _proration_paid(out: Paid, sub: Subscription, invoice: Invoice, attempt: PaymentAttempt, new_plan: Plan,
                   charge_id: str | None) -> Paid:
    """A plan change's proration was paid: the change takes effect (billing_engine/plan_changes.py)."""
    if sub.status == SubscriptionStatus.CANCELED or sub.plan_id == invoice.plan_id:
        if sub.status == SubscriptionStatus.CANCELED:  # ended while the upgrade charge was in flight
            out.refund = True
            out.events.append((events.EventType.PAYMENT_REFUND_AFTER_CANCEL, {
                "attempt_id": attempt.id, "amount_minor": attempt.amount_minor, "currency": attempt.currency,
                "gateway_charge_id": charge_id, "why": "plan change paid after the subscription ended"}))
        return out
    out.subscription.update(proration.switch_on_payment(sub, invoice, new_plan))
    out.subscription["updated_at"] = out.invoice["paid_at"]
    out.events.append((events.EventType.SUBSCRIPTION_PLAN_CHANGED, {
        "from_plan_id": sub.plan_id, "to_plan_id": invoice.plan_id, "when": "now",
        "proration_invoice_id": invoice.id, "amount_minor": invoice.amount_minor, "currency": invoice.currency,
        "period_start": out.subscription.get("current_period_start", sub.current_period_start),
        "period_end": out.subscription.get("current_period_end", sub.current_period_end)}))
    out.receipt = {"invoice_id": invoice.id, "amount_minor": invoice.amount_minor, "currency": invoice.currency,
                   "period_start": invoice.period_start, "period_end": invoice.period_end, "plan_name": new_plan.name}
    return out


def _invoice_paid(
    session: Session, sub: Subscription, plan: Plan, invoice: Invoice, attempt: PaymentAttempt,
    result: ChargeResult, *, now: datetime, actor: str, number_prefix: str | None = None,
    settings: Settings | None = None,
) -> Outcome:
    inv_plan = plan if invoice.plan_id == plan.id else session.get(Plan, invoice.plan_id)
    assert inv_plan is not None
    paid = paid_changes(sub, invoice, attempt, result, invoice_plan=inv_plan, plan_name=plan.name, now=now,
                        plan=plan, settings=settings)
    if invoice.number is None:
        paid.invoice["number"] = invoice_numbers.take_one(session, prefix=number_prefix)
    for obj, values in ((attempt, paid.attempt), (invoice, paid.invoice), (sub, paid.subscription)):
        for k, v in values.items():
            setattr(obj, k, v)
        session.add(obj)
    for etype, payload in paid.events:
        events.record(session, etype, at=now, actor=actor, subscription_id=sub.id, customer_id=sub.customer_id,
                      invoice_id=invoice.id, payload=payload)
    if paid.receipt is not None:
        notifications.enqueue(session, notifications.Kind.RECEIPT, customer_id=sub.customer_id,
                              subscription_id=sub.id, dedupe_key=f"receipt:{invoice.id}", at=now,
                              payload=paid.receipt)
    if paid.refund:
        session.flush()
        refunds.start(session, invoice_id=invoice.id, amount_minor=attempt.amount_minor,
                      reason="requested_by_customer", now=now,
                      idempotency_key_=f"{AUTO_REFUND_PREFIX}{attempt.id}")
        if paid.end_at_period_end:
            cancellations.end_at_period_end(session, sub, now=now)
        return Outcome.REFUNDING
    return Outcome.SUCCEEDED


def void_invoice(session: Session, invoice: Invoice, *, now: datetime, why: str) -> None:
    """Close an open invoice on which no money is due any more."""
    if invoice.status != InvoiceStatus.OPEN:
        return
    invoice.status = InvoiceStatus.VOID
    invoice.closed_at = now
    session.add(invoice)
    events.record(session, events.EventType.INVOICE_VOIDED, at=now, subscription_id=invoice.subscription_id,
                  customer_id=invoice.customer_id, invoice_id=invoice.id,
                  payload={"amount_minor": invoice.amount_minor, "currency": invoice.currency, "why": why})


def _give_up(session: Session, sub: Subscription, invoice: Invoice, *, reason: str, now: datetime) -> None:
    invoice.status = InvoiceStatus.UNCOLLECTIBLE
    invoice.closed_at = now
    invoice.updated_at = now
    session.add(invoice)
    cancellations.end_involuntarily(session, sub, reason=reason, now=now, actor="system:dunning",
                                    details={"invoice_id": invoice.id, "amount_minor": invoice.amount_minor,
                                             "currency": invoice.currency})
