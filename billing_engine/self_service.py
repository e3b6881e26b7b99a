"""What the customer's self-service page shows (``/account/{token}``, a signed link bound
to the customer: :func:`billing_engine.links.make_account_url`).

:func:`overview` reads the customer's subscriptions (plan, status, next charge date and
amount, card, cancellation state), and their invoices with the receipts of the paid
ones. Read only; the actions (cancel, undo, update the card, pause / resume, the
money-back guarantee, subscribe again, accept a new price) are the same service functions
the cancel page and the admin API call, and what the page offers is asked of them
(:func:`pauses.refusal`, :func:`guarantees.window`, :func:`reactivations.check`,
:func:`pricing.pending`), so it never shows a button that would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from billing_engine import cancellations, guarantees, pauses, pricing, reactivations, subscriptions
from billing_engine.errors import BillingError
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
from billing_engine.settings import Settings

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
    # pause / resume (the plan's customer_can_pause; pauses.py)
    paused: bool = False
    pause_note: str = ""  # "Paused until 1 March 2026" / "Pauses on ..., until ..."
    can_pause: bool = False
    can_pause_at_period_end: bool = False
    can_resume: bool = False
    # money-back guarantee (guarantees.py)
    guarantee_note: str = ""
    can_request_guarantee: bool = False
    # subscribe again (reactivations.py): the consent text shown next to the button
    can_reactivate: bool = False
    reactivate_terms: str = ""
    reactivate_card: str = ""
    # a price change announced (pricing.py)
    price_change_note: str = ""
    can_accept_price: bool = False
    price_accepted: bool = False
    accept_price_terms: str = ""


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


def subscription_view(session: Session, sub: Subscription, now: datetime, *, settings: Settings | None = None,
                      offer_reactivation: bool = False) -> SubscriptionView:
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
        **_pause(session, sub, plan, now), **_guarantee(session, sub, now),
        **(_reactivation(session, sub, settings) if offer_reactivation and settings is not None else {}),
        **_price(session, sub, plan),
    )


def _pause(session: Session, sub: Subscription, plan: Plan, now: datetime) -> dict[str, Any]:
    paused = sub.status == SubscriptionStatus.PAUSED
    note = ""
    if paused:
        note = f"Paused until {_date(sub.resumes_at)}" if sub.resumes_at else "Paused until you resume it"
    elif sub.pause_at_period_end and sub.status != SubscriptionStatus.CANCELED:
        note = f"Pauses on {_date(sub.current_period_end)}" + (
            f", until {_date(sub.resumes_at)}" if sub.resumes_at else "")
    can = pauses.refusal(session, sub, actor=pauses.CUSTOMER) is None
    return {"paused": paused, "pause_note": note, "can_pause": can,
            "can_pause_at_period_end": can and sub.current_period_end > now,
            "can_resume": pauses.can_resume(sub)}


def _guarantee(session: Session, sub: Subscription, now: datetime) -> dict[str, Any]:
    w = guarantees.window(session, sub, now=now)
    if w is None or w.deadline is None:
        return {}
    if w.eligible:
        note = (f"{w.days}-day money-back guarantee: until {_date(w.deadline)} you can ask for a full refund of "
                f"{_money(w.refundable_minor, w.currency)}. Your subscription then ends at once.")
    elif w.open:
        note = "Everything you paid on this subscription has been refunded."
    else:
        note = (f"The {w.days}-day money-back guarantee ended on {_date(w.deadline)}, so a refund is no longer "
                "available here. Please contact us if something went wrong.")
    return {"guarantee_note": note, "can_request_guarantee": w.eligible}


def _reactivation(session: Session, sub: Subscription, settings: Settings) -> dict[str, Any]:
    try:
        ok = reactivations.check(session, sub)
    except BillingError:
        return {}
    pm = reactivations.customer_card(session, ok)
    if pm is None or not ok.plan.active:
        return {}
    card = _card(pm)
    return {"can_reactivate": True, "reactivate_card": card,
            "reactivate_terms": reactivations.consent_text(settings, ok.plan, card)}


def _price(session: Session, sub: Subscription, plan: Plan) -> dict[str, Any]:
    p = pricing.pending(session, sub, plan)
    if p is None:
        return {}
    note = (f"The price changes from {_money(p.change.old_amount_minor, plan.currency)} to "
            f"{_money(p.change.amount_minor, plan.currency)} {_every(plan)} from {_date(p.first_at)}.")
    if p.accepted_at is not None:
        note += f" You accepted it on {_date(p.accepted_at)}."
    return {"price_change_note": note, "price_accepted": p.accepted_at is not None,
            "can_accept_price": p.accepted_at is None and sub.payment_method_id is not None,
            "accept_price_terms": pricing.acceptance_text(plan, p.change, p.first_at)}


def overview(session: Session, customer_id: str, now: datetime, settings: Settings | None = None) -> Overview | None:
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
    newest_ended = next((s.id for s in live_first if s.status == SubscriptionStatus.CANCELED), None)
    return Overview(
        customer_id=customer.id, customer_name=customer.name, email=customer.email,
        subscriptions=[subscription_view(session, s, now, settings=settings, offer_reactivation=s.id == newest_ended)
                       for s in live_first],
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
