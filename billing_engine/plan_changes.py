"""Plan changes: upgrade / downgrade, now (with proration) or at period end.

- **Now**: the credit for the unused part of the current period and the charge for the
  new plan are computed by :func:`billing_engine.proration.quote` (one rounding rule,
  second precision). A positive net is a ``proration`` invoice charged at once through
  the exactly-once path (invoice + pending attempt committed, then the gateway, then
  ``payments.settle``); the plan switches when that invoice is paid (the rule lives in
  ``payments.paid_changes``, so a charge whose answer was lost and is reconciled later
  switches it too), and a declined one changes nothing. A zero or negative net switches
  at once (a zero ``proration`` invoice documents it); a negative net is refunded on the
  current period's invoice. Across intervals the new plan's period starts at the change.
- **At period end**: ``scheduled_plan_id``; the run-cycle switches the plan when the
  period ends (:func:`apply_due`, called by ``charging.prepare``) and bills the new plan.
- Upgrades (a higher monthly-normalised price) default to now, everything else to period
  end. Another currency is refused. The new plan must be covered by a recorded consent.
- A **preview** returns the exact amounts and a signed token that holds them for
  ``PREVIEW_TTL``: the change made with it uses the preview's instant, so the amounts
  are the ones shown, and a retry with the same token finds the same proration invoice
  (unique per subscription and instant) and never charges twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import consents, events, payments, proration, refunds
from billing_engine.db import locks_rows, transaction
from billing_engine.errors import (
    Conflict,
    GatewayUnavailable,
    InvalidTransition,
    NotFound,
    PaymentDeclined,
    ValidationError,
)
from billing_engine.gateway.protocol import ChargeResult, GatewayUnreachable, PaymentGateway
from billing_engine.links import itsdangerous_keys
from billing_engine.models import (
    AttemptStatus,
    Customer,
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
from billing_engine.proration import ChangeTiming, ProrationBehavior, Quote
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE, Settings

PREVIEW_TTL = timedelta(minutes=15)
PRORATION_INDEX = -1  # proration invoices are no period of the schedule
CHANGEABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)


@dataclass(frozen=True, kw_only=True)
class Preview:
    subscription_id: str
    from_plan: Plan
    to_plan: Plan
    timing: ChangeTiming
    behavior: ProrationBehavior
    direction: str  # upgrade | downgrade | same_price
    quote: Quote | None  # None: at period end (nothing moves now)
    effective_at: datetime
    token: str
    token_expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        q = self.quote
        return {
            "subscription_id": self.subscription_id, "from_plan": self.from_plan.code, "to_plan": self.to_plan.code,
            "timing": self.timing.value, "proration_behavior": self.behavior.value, "direction": self.direction,
            "effective_at": self.effective_at, "currency": self.to_plan.currency,
            "credit_minor": q.credit_minor if q else 0, "charge_minor": q.charge_minor if q else 0,
            "net_minor": q.net_minor if q else 0,
            "amount_due_now_minor": max(q.net_minor, 0) if q else 0,
            "refund_now_minor": max(-q.net_minor, 0) if q and self.behavior != ProrationBehavior.NONE else 0,
            "new_period_start": q.period_start if q else None, "new_period_end": q.period_end if q else None,
            "unused_seconds": q.unused_seconds if q else None, "period_seconds": q.period_seconds if q else None,
            "preview_token": self.token, "preview_expires_at": self.token_expires_at,
        }


@dataclass(frozen=True, kw_only=True)
class Changed:
    subscription_id: str
    preview: Preview
    status: str  # changed | scheduled | declined | requires_action
    invoice_id: str | None = None
    refund_id: str | None = None
    decline_code: str | None = None


# --------------------------------------------------------------------------- preview


def _plan(session: Session, ref: str) -> Plan:
    p = session.get(Plan, ref) or session.exec(select(Plan).where(Plan.code == ref)).first()
    if p is None:
        raise NotFound(f"no plan {ref!r}", field="plan")
    return p


def direction(old: Plan, new: Plan) -> str:
    a = monthly_amount(old.amount_minor, Interval(old.interval), old.interval_count)
    b = monthly_amount(new.amount_minor, Interval(new.interval), new.interval_count)
    return "upgrade" if b > a else "downgrade" if b < a else "same_price"


def paid_for_current_period(session: Session, sub: Subscription, plan: Plan) -> int:
    """What the period the customer has now is worth, the base of the credit: what was
    paid for it (net of refunds); after an earlier change within it, the current plan's
    price (the customer paid the difference for it)."""
    invs = list(session.exec(select(Invoice).where(
        Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.PAID,
        col(Invoice.period_start) >= sub.current_period_start, col(Invoice.period_start) < sub.current_period_end)))
    if any(i.kind == InvoiceKind.PRORATION for i in invs):
        return plan.amount_minor
    first = next((i for i in invs if i.period_start == sub.current_period_start), None)
    return max(first.amount_paid_minor - first.amount_refunded_minor, 0) if first is not None else 0


def preview(
    session: Session, sub: Subscription, plan: str, *, now: datetime, settings: Settings,
    timing: str | None = None, behavior: str | None = None,
) -> Preview:
    """The exact amounts of changing ``sub`` to ``plan`` at ``now`` (changes nothing)."""
    new = _plan(session, plan)
    old = session.get(Plan, sub.plan_id)
    assert old is not None
    _check(session, sub, old, new)
    beh = _behavior(behavior)
    way = direction(old, new)
    when = _timing(timing) if timing else (ChangeTiming.NOW if way == "upgrade" or sub.status == SubscriptionStatus.TRIALING
                                           else ChangeTiming.PERIOD_END)
    at = proration.second(now)
    q: Quote | None = None
    if when == ChangeTiming.NOW and sub.status == SubscriptionStatus.ACTIVE:
        q = proration.quote(at=at, period_start=sub.current_period_start, period_end=sub.current_period_end,
                            paid_minor=paid_for_current_period(session, sub, old), old=old, new=new, behavior=beh)
    effective = at if when == ChangeTiming.NOW else sub.current_period_end
    expires = at + PREVIEW_TTL
    token = _sign(settings, {"s": sub.id, "p": new.id, "w": when.value, "b": beh.value, "at": at.isoformat(),
                             "x": expires.isoformat(), "q": _fingerprint(q)})
    return Preview(subscription_id=sub.id, from_plan=old, to_plan=new, timing=when, behavior=beh, direction=way,
                   quote=q, effective_at=effective, token=token, token_expires_at=expires)


def _check(session: Session, sub: Subscription, old: Plan, new: Plan) -> None:
    if sub.status not in CHANGEABLE:
        raise InvalidTransition(f"a {sub.status} subscription cannot change plan", field="subscription")
    if sub.cancel_at_period_end:
        raise InvalidTransition("the subscription ends at period end; undo the cancellation first",
                                field="subscription")
    if new.id == old.id:
        raise Conflict(f"the subscription is already on plan {new.code!r}", field="plan")
    if not new.active:
        raise Conflict(f"plan {new.code!r} is not active", field="plan")
    if new.currency != old.currency:
        raise ValidationError(f"cannot change currency ({old.currency} -> {new.currency}): cancel and subscribe "
                              f"to the new plan instead", field="plan")
    consents.require(session, sub.payment_method_id, new)


def _behavior(value: str | None) -> ProrationBehavior:
    try:
        return ProrationBehavior(value) if value else ProrationBehavior.CREATE_PRORATIONS
    except ValueError:
        raise ValidationError(f"must be one of {', '.join(b.value for b in ProrationBehavior)}",
                              field="proration_behavior") from None


def _timing(value: str) -> ChangeTiming:
    try:
        return ChangeTiming(value)
    except ValueError:
        raise ValidationError(f"must be one of {', '.join(t.value for t in ChangeTiming)}", field="when") from None


def _fingerprint(q: Quote | None) -> str:
    if q is None:
        return ""
    return f"{q.credit_minor}:{q.charge_minor}:{q.period_start.isoformat()}:{q.period_end.isoformat()}"


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(itsdangerous_keys(settings), salt="plan-change-preview",
                             signer_kwargs={"digest_method": hashlib.sha256})


def _sign(settings: Settings, data: dict[str, str]) -> str:
    return str(_serializer(settings).dumps(data))


def _unsign(settings: Settings, token: str) -> dict[str, str]:
    try:
        data = _serializer(settings).loads(token)
    except BadData:
        raise ValidationError("the preview token is invalid (tampered with, or signed with another key)",
                              field="preview_token") from None
    if not isinstance(data, dict):
        raise ValidationError("the preview token is invalid", field="preview_token")
    return {str(k): str(v) for k, v in data.items()}


# --------------------------------------------------------------------------- change


def change(
    engine: Engine, gateway: PaymentGateway, *, subscription_id: str, plan: str | None, now: datetime,
    settings: Settings, timing: str | None = None, behavior: str | None = None, preview_token: str | None = None,
    actor: str = "admin", schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
) -> Changed:
    """Change the plan (see the module docstring). A preview token fixes the instant and
    the amounts (refused once expired, or if the subscription moved since)."""
    with transaction(engine) as s:
        sub = _lock(s, subscription_id)
        if preview_token:
            data = _unsign(settings, preview_token)
            if data["s"] != sub.id or (plan is not None and _plan(s, plan).id != data["p"]):
                raise ValidationError("the preview token is for another subscription or plan", field="preview_token")
            if now > datetime.fromisoformat(data["x"]):
                raise Conflict(f"the preview expired at {data['x']}; preview again", field="preview_token")
            done = _already_done(s, sub, data)
            if done is not None:
                return done
            at = datetime.fromisoformat(data["at"])
            pv = preview(s, sub, data["p"], now=at, settings=settings, timing=data["w"], behavior=data["b"])
            if _fingerprint(pv.quote) != data["q"]:
                raise Conflict("the subscription changed since the preview; preview again", field="preview_token")
        else:
            if plan is None:
                raise ValidationError("a plan (or a preview token) is required", field="plan")
            pv = preview(s, sub, plan, now=now, settings=settings, timing=timing, behavior=behavior)
        if pv.timing == ChangeTiming.PERIOD_END:
            _schedule(s, sub, pv, now=now, actor=actor)
            return Changed(subscription_id=sub.id, preview=pv, status="scheduled")
        q = pv.quote
        if q is not None and q.net_minor > 0:
            invoice_id, attempt_id, call = _start_charge(s, sub, pv, q, now=now)
            pending = Changed(subscription_id=sub.id, preview=pv, status="pending", invoice_id=invoice_id)
        else:  # nothing to charge: the change takes effect at once
            if q is None:  # a trial: the new plan simply replaces the old one
                _switch_trial(s, sub, pv, now=now, actor=actor)
                return Changed(subscription_id=sub.id, preview=pv, status="changed")
            inv_id = _switch_now(s, sub, pv, now=now, actor=actor)
            refund_of = _credited_invoice_id(s, sub, q) if q.net_minor < 0 else None
            if refund_of is None:
                return Changed(subscription_id=sub.id, preview=pv, status="changed", invoice_id=inv_id)
    if q is not None and q.net_minor > 0:
        return _charge(engine, gateway, pending, attempt_id, call, now=now, actor=actor, schedule_days=schedule_days)
    assert q is not None and refund_of is not None
    r = refunds.create(engine, gateway, invoice_id=refund_of, amount_minor=-q.net_minor, reason=None, now=now,
                       request_key=f"plan_change:{subscription_id}:{q.at.isoformat()}", actor=actor)
    return Changed(subscription_id=subscription_id, preview=pv, status="changed", invoice_id=inv_id, refund_id=r.id)


def _lock(s: Session, subscription_id: str) -> Subscription:
    sub = s.get(Subscription, subscription_id, with_for_update=locks_rows(s), populate_existing=True)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id!r}", field="subscription")
    return sub


def _already_done(s: Session, sub: Subscription, data: dict[str, str]) -> Changed | None:
    """A retry of a change made with this token: its proration invoice exists."""
    at = datetime.fromisoformat(data["at"])
    inv = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.period_start == at,
                                       Invoice.kind == InvoiceKind.PRORATION)).first()
    if inv is None:
        if data["w"] == ChangeTiming.PERIOD_END and sub.scheduled_plan_id == data["p"]:
            raise Conflict("this change is already scheduled", field="preview_token")
        return None
    if inv.status == InvoiceStatus.VOID:
        raise Conflict(f"the charge of this change was declined (invoice {inv.id}); preview again",
                       field="preview_token")
    if inv.status == InvoiceStatus.OPEN:
        return None  # its charge is unresolved: re-sent below with the same key
    raise Conflict(f"this change was already made (invoice {inv.id})", field="preview_token", invoice_id=inv.id)


def _schedule(s: Session, sub: Subscription, pv: Preview, *, now: datetime, actor: str) -> None:
    sub.scheduled_plan_id = pv.to_plan.id
    sub.updated_at = now
    s.add(sub)
    events.record(s, events.EventType.SUBSCRIPTION_PLAN_CHANGE_SCHEDULED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id,
                  payload={"from_plan_id": pv.from_plan.id, "to_plan_id": pv.to_plan.id, "effective_at": pv.effective_at,
                           "direction": pv.direction})


def _new_invoice(s: Session, sub: Subscription, pv: Preview, q: Quote, amount: int, *, now: datetime) -> Invoice:
    existing = s.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.period_start == q.at)).first()
    if existing is not None:
        if existing.kind != InvoiceKind.PRORATION or existing.status != InvoiceStatus.OPEN:
            raise Conflict("another invoice starts at this very second; retry", field="subscription")
        return existing
    inv = Invoice(subscription_id=sub.id, customer_id=sub.customer_id, plan_id=pv.to_plan.id,
                  period_index=PRORATION_INDEX, period_start=q.at, period_end=q.period_end, amount_minor=amount,
                  currency=q.currency, kind=InvoiceKind.PRORATION, created_at=now)
    s.add(inv)
    s.flush()
    events.record(s, events.EventType.INVOICE_CREATED, at=now, subscription_id=sub.id, customer_id=sub.customer_id,
                  invoice_id=inv.id, payload={"kind": "proration", "from_plan_id": pv.from_plan.id,
                                              "to_plan_id": pv.to_plan.id, "credit_minor": q.credit_minor,
                                              "charge_minor": q.charge_minor, "net_minor": q.net_minor,
                                              "amount_minor": amount, "currency": q.currency,
                                              "period_start": q.at, "period_end": q.period_end})
    return inv


def _switch_now(s: Session, sub: Subscription, pv: Preview, *, now: datetime, actor: str) -> str:
    q = pv.quote
    assert q is not None
    inv = _new_invoice(s, sub, pv, q, 0, now=now)
    inv.status = InvoiceStatus.PAID
    inv.paid_at = now
    inv.closed_at = now
    s.add(inv)
    changes = proration.switch_on_payment(sub, inv, pv.to_plan)
    for k, v in changes.items():
        setattr(sub, k, v)
    sub.updated_at = now
    s.add(sub)
    events.record(s, events.EventType.SUBSCRIPTION_PLAN_CHANGED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id, invoice_id=inv.id,
                  payload={"from_plan_id": pv.from_plan.id, "to_plan_id": pv.to_plan.id, "when": "now",
                           "proration_invoice_id": inv.id, "credit_minor": q.credit_minor,
                           "charge_minor": q.charge_minor, "net_minor": q.net_minor, "currency": q.currency,
                           "period_start": sub.current_period_start, "period_end": sub.current_period_end})
    return inv.id


def _switch_trial(s: Session, sub: Subscription, pv: Preview, *, now: datetime, actor: str) -> None:
    sub.plan_id = pv.to_plan.id
    sub.scheduled_plan_id = None
    sub.updated_at = now
    s.add(sub)
    events.record(s, events.EventType.SUBSCRIPTION_PLAN_CHANGED, at=now, actor=actor, subscription_id=sub.id,
                  customer_id=sub.customer_id,
                  payload={"from_plan_id": pv.from_plan.id, "to_plan_id": pv.to_plan.id, "when": "now",
                           "trial": True})


def _credited_invoice_id(s: Session, sub: Subscription, q: Quote) -> str | None:
    """The paid invoice a negative net is refunded on: the latest paid one before the change
    with enough left to refund (None when there is none: nothing to give back)."""
    for inv in s.exec(select(Invoice).where(
            Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.PAID, col(Invoice.period_start) < q.at,
            col(Invoice.amount_paid_minor) > 0).order_by(col(Invoice.period_start).desc())):
        if refunds.refundable(s, inv) >= -q.net_minor:
            return inv.id
    return None


def _start_charge(s: Session, sub: Subscription, pv: Preview, q: Quote, *, now: datetime) -> tuple[str, str, Any]:
    """The proration invoice and its pending attempt (committed by the caller before the call)."""
    pm = s.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    if pm is None:
        raise ValidationError("the subscription has no payment method", field="payment_method")
    inv = _new_invoice(s, sub, pv, q, q.net_minor, now=now)
    pending = s.exec(payments.unresolved_query(invoice_id=inv.id)).first()
    attempt = pending if pending is not None else payments.start_attempt(s, sub, inv, pm, now=now)
    if pending is not None:
        pm = s.get(PaymentMethod, attempt.payment_method_id) or pm
    sub.lease_owner = f"plan_change:{attempt.id}"[:100]
    sub.lease_expires_at = datetime.now(UTC) + timedelta(minutes=5)
    s.add(sub)
    cust = s.get(Customer, sub.customer_id)
    request = payments.charge_request(attempt, pm.token, cust.gateway_customer_id if cust else None)
    return inv.id, attempt.id, (request, pending is not None)


def _charge(engine: Engine, gateway: PaymentGateway, out: Changed, attempt_id: str, call: Any, *, now: datetime,
            actor: str, schedule_days: Sequence[int]) -> Changed:
    request, reconcile = call
    result: ChargeResult | None = None
    try:
        if reconcile:
            result = gateway.find_charge(request.idempotency_key, metadata=request.metadata)
        if result is None:
            result = gateway.charge(request)
    except GatewayUnreachable as exc:
        _unlease(engine, out.subscription_id)
        raise GatewayUnavailable(f"the payment gateway gave no answer; the plan change of {out.subscription_id} "
                                 f"is pending (no decline): retry with the same preview token: {exc}") from None
    except BaseException:
        _unlease(engine, out.subscription_id)
        raise
    with transaction(engine) as s:
        attempt = s.get(PaymentAttempt, attempt_id)
        assert attempt is not None
        payments.settle(s, attempt, result, now=now, schedule_days=schedule_days, actor=actor)
        s.refresh(attempt)
        status, code = attempt.status, attempt.decline_code
        sub = s.get(Subscription, out.subscription_id)
        if sub is not None and (sub.lease_owner or "").startswith("plan_change:"):
            sub.lease_owner = None
            sub.lease_expires_at = None
            s.add(sub)
    if status == AttemptStatus.SUCCEEDED:
        return Changed(subscription_id=out.subscription_id, preview=out.preview, status="changed",
                       invoice_id=out.invoice_id)
    if status in (AttemptStatus.FAILED, AttemptStatus.REQUIRES_ACTION):
        raise PaymentDeclined(f"the card was declined ({code}): the plan was not changed (invoice {out.invoice_id} "
                              f"voided)", field="payment_method", decline_code=code,
                              subscription_id=out.subscription_id)
    raise GatewayUnavailable(f"the payment gateway gave no answer; the plan change of {out.subscription_id} is "
                             "pending (no decline): retry with the same preview token")


def _unlease(engine: Engine, sub_id: str) -> None:
    with transaction(engine) as s:
        sub = s.get(Subscription, sub_id)
        if sub is not None and (sub.lease_owner or "").startswith("plan_change:"):
            sub.lease_owner = None
            sub.lease_expires_at = None
            s.add(sub)


def cancel_scheduled(session: Session, sub: Subscription, *, now: datetime, actor: str = "admin") -> Subscription:
    if sub.scheduled_plan_id is None:
        raise Conflict("no plan change is scheduled", field="subscription")
    old = sub.scheduled_plan_id
    sub.scheduled_plan_id = None
    sub.updated_at = now
    session.add(sub)
    events.record(session, events.EventType.SUBSCRIPTION_PLAN_CHANGE_UNSCHEDULED, at=now, actor=actor,
                  subscription_id=sub.id, customer_id=sub.customer_id, payload={"to_plan_id": old})
    return sub


# --------------------------------------------------------------------------- at period end (run-cycle)


def apply_due(session: Session, subs: Sequence[Any], *, now: datetime) -> list[str]:
    """Switch the plans whose scheduled change is due (the period ended) before the
    run-cycle bills them: called by ``charging.prepare`` only for rows that have one."""
    changed: list[str] = []
    for row in subs:
        if (row.scheduled_plan_id is None or row.status != SubscriptionStatus.ACTIVE or row.cancel_at_period_end
                or row.current_period_end > now):
            continue
        sub = session.get(Subscription, row.id, populate_existing=True)
        new = session.get(Plan, row.scheduled_plan_id)
        old = session.get(Plan, row.plan_id)
        assert sub is not None and new is not None and old is not None
        if not proration.same_schedule(old, new):  # a new interval: its periods start where this one ends
            sub.billing_anchor = sub.current_period_end
            sub.next_period_index = 0
            sub.anchor_period_index = 0  # a new schedule (a resume may have re-anchored the old one)
        sub.plan_id = new.id
        sub.scheduled_plan_id = None
        sub.updated_at = now
        session.add(sub)
        events.record(session, events.EventType.SUBSCRIPTION_PLAN_CHANGED, at=now, actor="system:cycle",
                      subscription_id=sub.id, customer_id=sub.customer_id,
                      payload={"from_plan_id": old.id, "to_plan_id": new.id, "when": "period_end",
                               "effective_at": sub.current_period_end})
        changed.append(sub.id)
    if changed:
        session.flush()
    return changed
