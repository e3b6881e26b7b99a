"""Subscribe and charge the first period at once, through the exactly-once path.

1. ONE transaction (committed): the subscription (or the customer's incomplete one for
   the same plan, on a retry), the invoice of period 0 and a ``pending`` attempt with its
   deterministic idempotency key. The subscription is leased to this call for a few
   minutes so a run-cycle running at the same moment leaves it alone (a crash lets the
   lease lapse, and the run-cycle then reconciles the attempt).
2. The gateway call (an unresolved attempt found on a retry is first looked up, then
   re-sent with the SAME key: a retry never charges twice).
3. ONE transaction: the answer. Paid -> active, receipt (``payments.settle``, the rule
   of every paid invoice). Declined / requires action -> per ``payment_behavior``:
   ``error_if_incomplete`` voids the invoice and ends the subscription as
   ``incomplete_expired`` (never a subscriber, not churn: nothing charged or pending);
   ``allow_incomplete`` keeps it ``incomplete`` with its open invoice, for a retry (the
   same subscribe again, or the next run-cycle). No answer (timeout) -> the attempt stays
   unresolved and the subscription incomplete; nothing is reported as a decline.

Trials, future starts and ``defer_first_charge`` (bulk loads) charge nothing here: the
run-cycle makes the first charge, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import customers, events, invoices, metadata, notifications, payments, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import (
    Conflict,
    GatewayUnavailable,
    NotFound,
    PaymentDeclined,
    PaymentRequiresAction,
    ValidationError,
)
from billing_engine.gateway.protocol import (
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    GatewayUnreachable,
    PaymentGateway,
)
from billing_engine.models import (
    AttemptStatus,
    Customer,
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationStatus,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE

LEASE = timedelta(minutes=5)
# the card needs the customer (3-D Secure): the adapters answer an off-session charge with these codes
AUTHENTICATION_CODES = ("authentication_required",)  # the run-cycle leaves a subscription alone while its first charge is made


class PaymentBehavior(StrEnum):
    ERROR_IF_INCOMPLETE = "error_if_incomplete"  # a decline fails the subscribe; nothing is kept due
    ALLOW_INCOMPLETE = "allow_incomplete"  # a decline leaves it incomplete, its invoice open, for a retry


@dataclass(frozen=True, kw_only=True)
class FirstCharge:
    """What happened to the first charge at subscribe time."""

    status: str  # succeeded | declined | requires_action | unknown | deferred | trialing | scheduled
    invoice_id: str | None = None
    attempt_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    decline_code: str | None = None
    decline_kind: str | None = None
    message: str | None = None
    kept_incomplete: bool = False  # declined under allow_incomplete: its invoice stays open for a retry

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "invoice_id": self.invoice_id, "attempt_id": self.attempt_id,
                "amount_minor": self.amount_minor, "currency": self.currency, "decline_code": self.decline_code,
                "decline_kind": self.decline_kind, "message": self.message, "kept_incomplete": self.kept_incomplete}


@dataclass(frozen=True, kw_only=True)
class Subscribed:
    subscription_id: str
    first_charge: FirstCharge

    @property
    def failed(self) -> bool:
        return self.first_charge.status in ("declined", "requires_action")


def parse_behavior(value: str | None) -> PaymentBehavior:
    if value is None:
        return PaymentBehavior.ERROR_IF_INCOMPLETE
    try:
        return PaymentBehavior(value.strip())
    except ValueError:
        raise ValidationError(f"must be one of {', '.join(b.value for b in PaymentBehavior)}",
                              field="payment_behavior") from None


@dataclass(frozen=True, kw_only=True)
class _Call:
    subscription_id: str
    attempt_id: str
    reconcile: bool
    request: ChargeRequest


def subscribe(
    engine: Engine,
    gateway: PaymentGateway,
    *,
    customer: str,
    plan: str,
    payment_method: str | None,
    now: datetime,
    start_at: datetime | None = None,
    trial_days: int | None = None,
    payment_behavior: PaymentBehavior = PaymentBehavior.ERROR_IF_INCOMPLETE,
    defer_first_charge: bool = False,
    reactivated_from: str | None = None,
    metadata_: dict[str, Any] | None = None,
    actor: str = "admin",
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    coupon: str | None = None,
    paused: bool = False,
    resumes_at: datetime | None = None,
) -> Subscribed:
    """Subscribe ``customer`` to ``plan`` and (unless trial / future start / deferred) charge
    the first period now. Raises nothing for a decline: the result says it (callers turn
    ``Subscribed.failed`` into their error with :func:`declined_error`)."""
    meta = metadata.validate(metadata_, field="metadata") if metadata_ is not None else None
    with transaction(engine) as s:
        sub, call = _prepare(s, customer=customer, plan=plan, payment_method=payment_method, now=now,
                             start_at=start_at, trial_days=trial_days, defer=defer_first_charge,
                             reactivated_from=reactivated_from, meta=meta, actor=actor,
                             coupon=coupon, paused=paused, resumes_at=resumes_at)
        sub_id = sub.id
        if call is None:
            status = ("trialing" if sub.status == SubscriptionStatus.TRIALING else
                      "deferred" if defer_first_charge else "scheduled")
            nxt = subscriptions.next_charge(s, sub)
            return Subscribed(subscription_id=sub_id, first_charge=FirstCharge(
                status=status, amount_minor=nxt[1] if nxt else None, currency=nxt[2] if nxt else None))
    result: ChargeResult | None = None
    unreachable: GatewayUnreachable | None = None
    try:
        if call.reconcile:
            result = gateway.find_charge(call.request.idempotency_key, metadata=call.request.metadata)
        if result is None:
            result = gateway.charge(call.request)
    except GatewayUnreachable as exc:
        unreachable = exc
    except BaseException:
        _release(engine, sub_id)  # our configuration (or a bug): the attempt stays unresolved
        raise
    with transaction(engine) as s:
        out = _settle(s, call, result, behavior=payment_behavior, now=now, actor=actor,
                      schedule_days=schedule_days)
        _unlease(s, sub_id)
    if unreachable is not None or out.status == "unknown":
        raise GatewayUnavailable(
            f"the payment gateway gave no answer; subscription {sub_id} stays incomplete with its first "
            f"charge unresolved (no decline): retry the same request, or the next run-cycle reconciles it"
            + (f": {unreachable}" if unreachable else ""), field="payment_method", subscription_id=sub_id)
    return Subscribed(subscription_id=sub_id, first_charge=out)


def declined_error(res: Subscribed) -> PaymentDeclined:
    fc = res.first_charge
    cls = PaymentRequiresAction if fc.status == "requires_action" else PaymentDeclined
    what = "needs the customer's authentication" if fc.status == "requires_action" else "was declined"
    state = ("stays incomplete: retry the same request, with this or another card" if fc.kept_incomplete
             else "was not started and nothing was charged")
    return cls(f"the card {what} ({fc.decline_code}): {fc.message or 'no message'}; subscription "
               f"{res.subscription_id} {state}",
               field="payment_method", subscription_id=res.subscription_id, decline_code=fc.decline_code)


# --------------------------------------------------------------------------- phases


def _prepare(
    s: Session, *, customer: str, plan: str, payment_method: str | None, now: datetime,
    start_at: datetime | None, trial_days: int | None, defer: bool, reactivated_from: str | None,
    meta: dict[str, str] | None, actor: str, coupon: str | None = None, paused: bool = False,
    resumes_at: datetime | None = None,
) -> tuple[Subscription, _Call | None]:
    cust = customers.get(s, customer)
    the_plan = s.get(Plan, plan) or s.exec(select(Plan).where(Plan.code == plan)).first()
    if the_plan is None:
        raise NotFound(f"no plan {plan!r}", field="plan")
    pm_id = payment_method or cust.default_payment_method_id
    sub = _retry_of(s, cust, the_plan) if reactivated_from is None else None
    if sub is not None:  # the same subscribe again: pay the incomplete one, never a second subscription
        if pm_id and pm_id != sub.payment_method_id:
            subscriptions.change_payment_method(s, sub, pm_id, now=now, actor=actor)
    else:
        sub = subscriptions.create(s, customer_id=cust.id, plan_id=the_plan.id, payment_method_id=pm_id, now=now,
                                   start_at=start_at, trial_days=trial_days, actor=actor, coupon=coupon,
                                   paused=paused, resumes_at=resumes_at)
        if meta is not None or reactivated_from is not None:
            sub.metadata_json = metadata.dump(meta) if meta else None
            sub.reactivated_from = reactivated_from
            s.add(sub)
    if sub.status != SubscriptionStatus.INCOMPLETE or defer or sub.current_period_end > now:
        return sub, None
    pm = s.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is None:
        raise ValidationError("a payment method with recorded consent is required", field="payment_method")
    pending = s.exec(payments.unresolved_query(subscription_ids=[sub.id])).first()
    if pending is not None:
        attempt, reconcile = pending, True
        pm = s.get(PaymentMethod, attempt.payment_method_id) or pm
    else:
        invoice = invoices.for_period(s, sub, the_plan, 0, now=now)
        if invoice.status != InvoiceStatus.OPEN:
            raise Conflict(f"the first invoice {invoice.id} is {invoice.status}", field="subscription")
        attempt, reconcile = payments.start_attempt(s, sub, invoice, pm, now=now), False
    sub.lease_owner = f"subscribe:{attempt.id}"[:100]
    sub.lease_expires_at = datetime.now(UTC) + LEASE
    s.add(sub)
    request = payments.charge_request(attempt, pm.token, cust.gateway_customer_id)
    return sub, _Call(subscription_id=sub.id, attempt_id=attempt.id, reconcile=reconcile, request=request)


def _retry_of(s: Session, cust: Customer, plan: Plan) -> Subscription | None:
    """The customer's subscription to ``plan`` that a subscribe may be a retry of: an
    incomplete one is reused; a live one means "already subscribed"."""
    live = s.exec(select(Subscription).where(
        Subscription.customer_id == cust.id, Subscription.plan_id == plan.id,
        col(Subscription.status).in_([SubscriptionStatus.INCOMPLETE, SubscriptionStatus.ACTIVE,
                                      SubscriptionStatus.PAST_DUE, SubscriptionStatus.TRIALING]),
    ).order_by(col(Subscription.created_at).desc())).first()
    if live is None:
        return None
    if live.status == SubscriptionStatus.INCOMPLETE:
        return live
    article = "an" if str(live.status)[0] in "aeiou" else "a"  # an active, a past_due, a trialing
    raise Conflict(f"the customer already has {article} {live.status} subscription {live.id} to plan {plan.code!r}",
                   field="plan", subscription_id=live.id)


def _settle(
    s: Session, call: _Call, result: ChargeResult | None, *, behavior: PaymentBehavior, now: datetime,
    actor: str, schedule_days: Sequence[int],
) -> FirstCharge:
    attempt = s.get(PaymentAttempt, call.attempt_id)
    assert attempt is not None
    if result is not None:
        if result.status in (ChargeStatus.SUCCEEDED, ChargeStatus.UNKNOWN):
            payments.settle(s, attempt, result, now=now, schedule_days=schedule_days, actor=actor)
        elif attempt.status in payments.UNRESOLVED:
            _declined(s, attempt, result, behavior=behavior, now=now, actor=actor)
    s.refresh(attempt)
    status = {AttemptStatus.SUCCEEDED: "succeeded", AttemptStatus.FAILED: "declined",
              AttemptStatus.REQUIRES_ACTION: "requires_action"}.get(AttemptStatus(attempt.status), "unknown")
    if status == "declined" and attempt.decline_code in AUTHENTICATION_CODES:  # off-session: a decline code
        status = "requires_action"
    invoice = s.get(Invoice, attempt.invoice_id)
    kept = invoice is not None and invoice.status == InvoiceStatus.OPEN and status in ("declined", "requires_action")
    return FirstCharge(status=status, invoice_id=attempt.invoice_id, attempt_id=attempt.id,
                       amount_minor=attempt.amount_minor, currency=attempt.currency,
                       decline_code=attempt.decline_code, decline_kind=attempt.decline_kind, message=attempt.message,
                       kept_incomplete=kept)


def _declined(s: Session, attempt: PaymentAttempt, result: ChargeResult, *, behavior: PaymentBehavior,
              now: datetime, actor: str) -> None:
    sub = s.get(Subscription, attempt.subscription_id)
    invoice = s.get(Invoice, attempt.invoice_id)
    assert sub is not None and invoice is not None
    code, _kind = payments.mark_declined(s, sub, invoice, attempt, result, now=now)
    if behavior == PaymentBehavior.ALLOW_INCOMPLETE or sub.status != SubscriptionStatus.INCOMPLETE:
        return
    payments.void_invoice(s, invoice, now=now, why=f"first charge declined: {code}")
    sub.status = SubscriptionStatus.INCOMPLETE_EXPIRED
    sub.ended_at = now
    sub.updated_at = now
    s.add(sub)
    events.record(s, events.EventType.SUBSCRIPTION_INCOMPLETE_EXPIRED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=invoice.id,
                  payload={"decline_code": code, "attempt_id": attempt.id, "payment_behavior": behavior.value})
    # it never started: the sign-up confirmation queued with it is not sent (the caller
    # tells the customer at once that the card was declined)
    s.execute(delete(Notification).where(
        col(Notification.subscription_id) == sub.id, col(Notification.status) == NotificationStatus.PENDING,
        col(Notification.kind) == notifications.Kind.SUBSCRIPTION_CONFIRMED))


def _unlease(s: Session, sub_id: str) -> None:
    sub = s.get(Subscription, sub_id)
    if sub is not None and (sub.lease_owner or "").startswith("subscribe:"):
        sub.lease_owner = None
        sub.lease_expires_at = None
        s.add(sub)


def _release(engine: Engine, sub_id: str) -> None:
    with transaction(engine) as s:
        _unlease(s, sub_id)
