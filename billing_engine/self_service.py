"""What the customer's self-service page shows (``/account/{token}``, a signed link bound
to the customer: :func:`billing_engine.links.make_account_url`).

:func:`overview` reads the customer's subscriptions (plan, status, next charge date and
amount, card, cancellation state), and their invoices with the receipts of the paid
ones. Read only; the actions (cancel, undo, update the card) are the same service
functions the cancel page and the admin API call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from billing_engine import cancellations, subscriptions
from billing_engine.models import (
    Customer,
    Invoice,
    InvoiceStatus,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.money import format_minor

MAX_INVOICES = 36


def _date(dt: datetime | None) -> str:
    return f"{dt.day} {dt:%B %Y}" if dt else ""


def _money(amount_minor: int, currency: str) -> str:
    return f"{format_minor(amount_minor, currency)} {currency}"


def _every(plan: Plan) -> str:
    n = plan.interval_count or 1
    return f"every {plan.interval}" if n == 1 else f"every {n} {plan.interval}s"


@dataclass(frozen=True, kw_only=True)
class SubscriptionView:
    id: str
    plan_name: str
    price: str
    status: str  # active | trialing | past_due | incomplete | canceled
    state: str  # active | scheduled (cancels at period end) | ended
    next_charge: str  # "15 February 2026: 17.00 USD" or ""
    access_until: str
    ended_on: str
    card: str  # "Visa ending 4242 (expires 12/2030)" or ""
    past_due: bool
    amount_due: str  # what is outstanding in dunning, or ""
    can_cancel: bool
    can_undo: bool
    can_update_card: bool


@dataclass(frozen=True, kw_only=True)
class InvoiceView:
    id: str
    number: str
    plan_name: str
    period: str
    amount: str
    status: str
    paid_on: str
    has_receipt: bool


@dataclass(frozen=True, kw_only=True)
class Overview:
    customer_id: str
    customer_name: str
    email: str
    subscriptions: list[SubscriptionView]
    invoices: list[InvoiceView]


def _card(pm: PaymentMethod | None) -> str:
    if pm is None or not pm.last4:
        return ""
    exp = f" (expires {pm.exp_month:02d}/{pm.exp_year})" if pm.exp_month and pm.exp_year else ""
    return f"{pm.brand.title()} ending {pm.last4}{exp}"


def subscription_view(session: Session, sub: Subscription, now: datetime) -> SubscriptionView:
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    pm = session.get(PaymentMethod, sub.payment_method_id) if sub.payment_method_id else None
    nxt = subscriptions.next_charge(session, sub)
    ended = sub.status == SubscriptionStatus.CANCELED
    state = "ended" if ended else ("scheduled" if sub.cancel_at_period_end else "active")
    past_due = sub.status == SubscriptionStatus.PAST_DUE
    due = ""
    if past_due:
        open_inv = session.exec(select(Invoice).where(
            Invoice.subscription_id == sub.id, Invoice.status == InvoiceStatus.OPEN,
        ).order_by(col(Invoice.period_start).desc())).first()
        if open_inv is not None:
            due = _money(open_inv.amount_minor, open_inv.currency)
    return SubscriptionView(
        id=sub.id, plan_name=plan.name, price=f"{_money(plan.amount_minor, plan.currency)} {_every(plan)}",
        status=sub.status, state=state,
        next_charge=f"{_date(nxt[0])}: {_money(nxt[1], nxt[2])}" if nxt else "",
        access_until=_date(sub.current_period_end), ended_on=_date(sub.ended_at), card=_card(pm),
        past_due=past_due, amount_due=due, can_cancel=state == "active",
        can_undo=cancellations.can_undo(sub, now), can_update_card=not ended,
    )


def overview(session: Session, customer_id: str, now: datetime) -> Overview | None:
    """Everything the page shows for this customer (None: no such customer)."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    subs = list(session.exec(select(Subscription).where(Subscription.customer_id == customer_id)
                             .order_by(col(Subscription.created_at).desc(), col(Subscription.id))))
    plans = {p.id: p for p in session.exec(select(Plan).where(col(Plan.id).in_({s.plan_id for s in subs})))}
    invs = list(session.exec(select(Invoice).where(
        Invoice.customer_id == customer_id, col(Invoice.status).in_([InvoiceStatus.PAID, InvoiceStatus.OPEN]),
    ).order_by(col(Invoice.period_start).desc(), col(Invoice.id)).limit(MAX_INVOICES)))
    for inv in invs:
        if inv.plan_id not in plans:
            p = session.get(Plan, inv.plan_id)
            if p is not None:
                plans[p.id] = p
    live_first = sorted(subs, key=lambda s: s.status == SubscriptionStatus.CANCELED)
    return Overview(
        customer_id=customer.id, customer_name=customer.name, email=customer.email,
        subscriptions=[subscription_view(session, s, now) for s in live_first],
        invoices=[InvoiceView(
            id=i.id, number=i.number or "", plan_name=plans[i.plan_id].name if i.plan_id in plans else "",
            period=f"{_date(i.period_start)} to {_date(i.period_end)}",
            amount=_money(i.amount_minor, i.currency), status=i.status, paid_on=_date(i.paid_at),
            has_receipt=i.status == InvoiceStatus.PAID and bool(i.number),
        ) for i in invs],
    )


def owned_subscription(session: Session, customer_id: str, subscription_id: str, *, lock: bool = False) -> Subscription | None:
    """The subscription if it belongs to this customer (a token never reaches another's)."""
    pg = session.get_bind().dialect.name == "postgresql"
    sub = session.get(Subscription, subscription_id, with_for_update=lock and pg)
    return sub if sub is not None and sub.customer_id == customer_id else None
