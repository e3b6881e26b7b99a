"""Money-back guarantee: a plan's ``guarantee_days`` promise a 100% refund on request
within that many days of the subscription's first payment.

A guarantee refund returns everything still refundable on the subscription's paid
invoices (each a normal two-phase refund, ``refunds.guarantee = true``, so reports show
it as "guarantee refunds") and ends the subscription at once (voluntary: the customer
asked). Outside the window, or on a plan without a guarantee, it is refused with the
deadline in the message; an ordinary refund (``billing refund create``) stays possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import cancellations, events, refunds, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import Conflict
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.models import Invoice, InvoiceStatus, Plan, Refund, RefundStatus, Subscription, SubscriptionStatus


@dataclass(frozen=True, kw_only=True)
class GuaranteeRefund:
    subscription_id: str
    refund_ids: list[str]
    amount_minor: int
    currency: str
    deadline: datetime


@dataclass(frozen=True, kw_only=True)
class Window:
    """The guarantee as the customer sees it (the self-service page): ``eligible`` exactly
    when :func:`refund` would grant it at ``now``."""

    days: int
    deadline: datetime | None  # None: nothing paid yet (the window starts with the first payment)
    open: bool  # now <= deadline
    refundable_minor: int  # still refundable on the paid invoices
    currency: str

    @property
    def eligible(self) -> bool:
        return self.open and self.refundable_minor > 0


def window(session: Session, sub: Subscription, *, now: datetime) -> Window | None:
    """The plan's guarantee window for ``sub`` (None: the plan has no guarantee)."""
    plan = session.get(Plan, sub.plan_id)
    if plan is None or not plan.guarantee_days:
        return None
    end = deadline(sub, plan)
    left = 0
    if end is not None and now <= end:
        left = sum(refunds.refundable(session, inv) for inv in session.exec(select(Invoice).where(
            Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.PAID)))
    return Window(days=plan.guarantee_days, deadline=end, open=end is not None and now <= end,
                  refundable_minor=left, currency=plan.currency)


def deadline(sub: Subscription, plan: Plan) -> datetime | None:
    if not plan.guarantee_days or sub.activated_at is None:
        return None
    return sub.activated_at + timedelta(days=plan.guarantee_days)


def check(session: Session, sub: Subscription, *, now: datetime) -> tuple[Plan, datetime]:
    """The plan and the deadline, or a Conflict saying why no guarantee refund is due."""
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    if not plan.guarantee_days:
        raise Conflict(f"plan {plan.code!r} has no money-back guarantee; use an ordinary refund",
                       field="subscription")
    end = deadline(sub, plan)
    if end is None:
        raise Conflict("nothing was paid on this subscription yet", field="subscription")
    if now > end:
        raise Conflict(f"the {plan.guarantee_days}-day money-back guarantee ended at {end.isoformat()} "
                       f"(first payment {sub.activated_at.isoformat() if sub.activated_at else '-'}); "
                       "use an ordinary refund", field="subscription")
    return plan, end


def refund(engine: Engine, gateway: PaymentGateway, *, subscription_id: str, now: datetime,
           actor: str = "admin") -> GuaranteeRefund:
    """Refund everything paid on the subscription under its plan's guarantee, and end it."""
    with transaction(engine) as s:
        sub = subscriptions.get(s, subscription_id)
        plan, end = check(s, sub, now=now)
        pending: list[str] = []
        for inv in s.exec(select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.PAID)
                          .order_by(col(Invoice.period_start))):
            if refunds.refundable(s, inv) <= 0:
                continue
            r = refunds.start(s, invoice_id=inv.id, amount_minor=None, reason="requested_by_customer", now=now,
                              idempotency_key_=f"guarantee:{inv.id}")
            r.guarantee = True
            s.add(r)
            pending.append(r.id)
        if not pending:
            raise Conflict("everything paid on this subscription was already refunded", field="subscription")
        total = sum(s.get_one(Refund, rid).amount_minor for rid in pending)
        events.record(s, events.EventType.REFUND_GUARANTEE_GRANTED, at=now, actor=actor, subscription_id=sub.id,
                      customer_id=sub.customer_id,
                      payload={"refund_ids": pending, "amount_minor": total, "currency": plan.currency,
                               "guarantee_days": plan.guarantee_days, "deadline": end})
        if sub.status != SubscriptionStatus.CANCELED:
            cancellations.cancel(s, sub, kind="voluntary", reason=None, comment="money-back guarantee refund",
                                 at_period_end=False, now=now, actor=actor)
    sent = [refunds.send(engine, gateway, rid, now=now, actor=actor) for rid in pending]
    return GuaranteeRefund(subscription_id=subscription_id, refund_ids=[r.id for r in sent],
                           amount_minor=sum(r.amount_minor for r in sent if r.status == RefundStatus.SUCCEEDED),
                           currency=plan.currency, deadline=end)
