"""What the customer's self-service page shows (``/account/{token}``, a signed link bound
to the customer: :func:`billing_engine.links.make_account_url`).

:func:`overview` reads the customer's subscriptions (plan, status, next charge date and
amount, card, cancellation state), and their invoices with the receipts of the paid
ones. Read only; the actions (cancel, undo, update the card, pause / resume, the
money-back guarantee, subscribe again, accept a new price) are the same service functions
the cancel page and the admin API call, and what the page offers is asked of them
(:func:`pauses.refusal`, :func:`guarantees.window`, :func:`reactivations.check`,
:func:`pricing.pending`), so it never shows a button that would be refused.

Every sentence is in the customer's language (``tr``: the caller passes the customer's
translator), amounts and dates by :meth:`billing_engine.i18n.Translator.money` / ``date`` (as in the e-mails).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from billing_engine import cancellations, guarantees, i18n, pauses, pricing, reactivations, subscriptions, terms
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
from billing_engine.settings import Settings

MAX_INVOICES = 36




def _every(tr: i18n.Translator, plan: Plan) -> str:
    return terms.every(tr, plan.interval, int(plan.interval_count or 1))


@dataclass(frozen=True, kw_only=True)
class SubscriptionView:
    id: str
    plan_name: str
    price: str
    status: str  # active | trialing | past_due | incomplete | canceled
    state: str  # active | scheduled (cancels at period end) | ended
    next_charge: str  # "February 15, 2026: $17.00" or ""
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


def _card(tr: i18n.Translator, pm: PaymentMethod | None) -> str:
    if pm is None or not pm.last4:
        return ""
    if pm.exp_month and pm.exp_year:
        expiry = str(pm.exp_month).zfill(2) + "/" + str(pm.exp_year)  # (an f-string here trips pybabel extract)
        return tr.gettext("%(brand)s ending %(last4)s (expires %(expiry)s)", brand=pm.brand.title(), last4=pm.last4,
                          expiry=expiry)
    return tr.gettext("%(brand)s ending %(last4)s", brand=pm.brand.title(), last4=pm.last4)


def subscription_view(session: Session, sub: Subscription, now: datetime, *, tr: i18n.Translator,
                      settings: Settings | None = None, offer_reactivation: bool = False) -> SubscriptionView:
    """One subscription as the page shows it, in ``tr``'s language (the customer's:
    :func:`billing_engine.notifications.translator_for`)."""
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
            due = tr.money(open_inv.amount_minor, open_inv.currency)
    return SubscriptionView(
        id=sub.id, plan_name=plan.name,
        price=tr.gettext("%(amount)s %(every)s", amount=tr.money(plan.amount_minor, plan.currency),
                         every=_every(tr, plan)),
        status=sub.status, state=state,
        next_charge=tr.gettext("%(date)s: %(amount)s", date=tr.date(nxt[0]), amount=tr.money(nxt[1], nxt[2]))
        if nxt else "",
        access_until=tr.date(sub.current_period_end), ended_on=tr.date(sub.ended_at), card=_card(tr, pm),
        past_due=past_due, amount_due=due, can_cancel=state == "active",
        can_undo=cancellations.can_undo(sub, now), can_update_card=not ended,
        **_pause(session, sub, now, tr), **_guarantee(session, sub, now, tr),
        **(_reactivation(session, sub, settings, tr) if offer_reactivation and settings is not None else {}),
        **_price(session, sub, plan, tr),
    )


def _pause(session: Session, sub: Subscription, now: datetime, tr: i18n.Translator) -> dict[str, Any]:
    paused = sub.status == SubscriptionStatus.PAUSED
    note = ""
    if paused:
        note = (tr.gettext("Paused until %(date)s", date=tr.date(sub.resumes_at)) if sub.resumes_at
                else tr.gettext("Paused until you resume it"))
    elif sub.pause_at_period_end and sub.status != SubscriptionStatus.CANCELED:
        note = (tr.gettext("Pauses on %(date)s, until %(until)s", date=tr.date(sub.current_period_end),
                           until=tr.date(sub.resumes_at)) if sub.resumes_at
                else tr.gettext("Pauses on %(date)s", date=tr.date(sub.current_period_end)))
    can = pauses.refusal(session, sub, actor=pauses.CUSTOMER) is None
    return {"paused": paused, "pause_note": note, "can_pause": can,
            "can_pause_at_period_end": can and sub.current_period_end > now,
            "can_resume": pauses.can_resume(sub)}


def _guarantee(session: Session, sub: Subscription, now: datetime, tr: i18n.Translator) -> dict[str, Any]:
    w = guarantees.window(session, sub, now=now)
    if w is None or w.deadline is None:
        return {}
    if w.eligible:
        note = tr.gettext("%(days)s-day money-back guarantee: until %(date)s you can ask for a full refund of "
                          "%(amount)s. Your subscription then ends at once.", days=w.days, date=tr.date(w.deadline),
                          amount=tr.money(w.refundable_minor, w.currency))
    elif w.open:
        note = tr.gettext("Everything you paid on this subscription has been refunded.")
    else:
        note = tr.gettext("The %(days)s-day money-back guarantee ended on %(date)s, so a refund is no longer "
                          "available here. Please contact us if something went wrong.",
                          days=w.days, date=tr.date(w.deadline))
    return {"guarantee_note": note, "can_request_guarantee": w.eligible}


def _reactivation(session: Session, sub: Subscription, settings: Settings, tr: i18n.Translator) -> dict[str, Any]:
    try:
        ok = reactivations.check(session, sub)
    except BillingError:
        return {}
    pm = reactivations.customer_card(session, ok)
    if pm is None or not ok.plan.active:
        return {}
    card = _card(tr, pm)
    return {"can_reactivate": True, "reactivate_card": card,
            "reactivate_terms": reactivations.consent_text(settings, ok.plan, card, tr)}


def _price(session: Session, sub: Subscription, plan: Plan, tr: i18n.Translator) -> dict[str, Any]:
    p = pricing.pending(session, sub, plan)
    if p is None:
        return {}
    note = tr.gettext("The price changes from %(old_amount)s to %(amount)s %(every)s from %(date)s.",
                      old_amount=tr.money(p.change.old_amount_minor, plan.currency),
                      amount=tr.money(p.change.amount_minor, plan.currency), every=_every(tr, plan),
                      date=tr.date(p.first_at))
    if p.accepted_at is not None:
        note += " " + tr.gettext("You accepted it on %(date)s.", date=tr.date(p.accepted_at))
    return {"price_change_note": note, "price_accepted": p.accepted_at is not None,
            "can_accept_price": p.accepted_at is None and sub.payment_method_id is not None,
            "accept_price_terms": pricing.acceptance_text(plan, p.change, p.first_at, tr)}


def overview(session: Session, customer_id: str, now: datetime, settings: Settings | None = None, *,
             tr: i18n.Translator) -> Overview | None:
    """Everything the page shows for this customer (None: no such customer), in ``tr``'s
    language (the customer's)."""
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
        subscriptions=[subscription_view(session, s, now, settings=settings, offer_reactivation=s.id == newest_ended,
                                         tr=tr) for s in live_first],
        invoices=[InvoiceView(
            id=i.id, number=i.number or "", plan_name=plans[i.plan_id].name if i.plan_id in plans else "",
            period=tr.gettext("%(start)s to %(end)s", start=tr.date(i.period_start), end=tr.date(i.period_end)),
            amount=tr.money(i.amount_minor, i.currency), status=i.status, paid_on=tr.date(i.paid_at),
            has_receipt=i.status == InvoiceStatus.PAID and bool(i.number),
        ) for i in invs],
    )


def owned_subscription(session: Session, customer_id: str, subscription_id: str, *, lock: bool = False) -> Subscription | None:
    """The subscription if it belongs to this customer (a token never reaches another's)."""
    pg = session.get_bind().dialect.name == "postgresql"
    sub = session.get(Subscription, subscription_id, with_for_update=lock and pg)
    return sub if sub is not None and sub.customer_id == customer_id else None
