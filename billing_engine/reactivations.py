"""Reactivation: a customer whose subscription ended subscribes again, linked to it.

The new subscription records ``reactivated_from`` (the old one stays as it was: its
churn is history) and a ``subscription.reactivated`` event; it is charged at once like
any subscribe (:mod:`billing_engine.first_charge`). The MRR report counts its first
payment as *reactivation* (a customer who had churned), not *new*. To take back a
cancellation that has not taken effect yet, use ``cancellations.undo`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import consents, events, first_charge, i18n, plans, subscriptions, terms
from billing_engine.consents import ConsentInput
from billing_engine.db import transaction
from billing_engine.errors import Conflict, InvalidTransition, NotFound
from billing_engine.first_charge import PaymentBehavior, Subscribed
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.models import (
    LIVE_STATUSES,
    Customer,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE, Settings

CUSTOMER = "customer"  # the actor of the self-service page


@dataclass(frozen=True, kw_only=True)
class Eligible:
    """What a reactivation of ``old`` would do: whose, which plan, which card."""

    old_subscription_id: str
    customer_id: str
    plan: Plan
    payment_method_id: str | None  # None: the customer's default card (first_charge.subscribe)


def check(s: Session, old: Subscription, *, plan: str | None = None, payment_method: str | None = None) -> Eligible:
    """THE rules of a reactivation (raises why not): ``old`` has ended and the customer has no
    live subscription. Asked by :func:`reactivate` and by the self-service page."""
    if old.status != SubscriptionStatus.CANCELED:
        raise InvalidTransition(
            f"subscription {old.id} is {old.status}: only an ended subscription is reactivated "
            "(a cancellation that has not taken effect yet is taken back with undo-cancel)", field="subscription")
    live = s.exec(select(Subscription).where(Subscription.customer_id == old.customer_id,
                                             col(Subscription.status).in_(list(LIVE_STATUSES)))).first()
    if live is not None:
        raise Conflict(f"the customer already has a {live.status} subscription {live.id}", field="subscription",
                       subscription_id=live.id)
    new_plan = plans.get(s, plan) if plan else s.get_one(Plan, old.plan_id)
    pm_id = payment_method
    if pm_id is None and old.payment_method_id:
        pm = s.get(PaymentMethod, old.payment_method_id)
        pm_id = pm.id if pm is not None and pm.status == PaymentMethodStatus.ACTIVE else None
    return Eligible(old_subscription_id=old.id, customer_id=old.customer_id, plan=new_plan, payment_method_id=pm_id)


def reactivate(
    engine: Engine, gateway: PaymentGateway, *, subscription_id: str, now: datetime, plan: str | None = None,
    payment_method: str | None = None, payment_behavior: PaymentBehavior = PaymentBehavior.ERROR_IF_INCOMPLETE,
    actor: str = "admin", schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
) -> Subscribed:
    with transaction(engine) as s:
        old = subscriptions.get(s, subscription_id)
        ok = check(s, old, payment_method=payment_method)
        customer_id, pm_id, plan_ref = ok.customer_id, ok.payment_method_id, plan or ok.plan.code
    res = first_charge.subscribe(engine, gateway, customer=customer_id, plan=plan_ref, payment_method=pm_id,
                                 now=now, trial_days=0, payment_behavior=payment_behavior, reactivated_from=old.id,
                                 actor=actor, schedule_days=schedule_days)
    with transaction(engine) as s:
        events.record(s, events.EventType.SUBSCRIPTION_REACTIVATED, at=now, actor=actor,
                      subscription_id=res.subscription_id, customer_id=customer_id,
                      payload={"reactivated_from": subscription_id, "plan": plan_ref,
                               "first_charge": res.first_charge.status})
    return res


# --------------------------------------------------------------------------- the customer's own


TERMS_VERSION = "reactivation-v1"


def consent_text(settings: Settings, plan: Plan, card: str, tr: i18n.Translator | None = None) -> str:
    """The words next to the customer's "Subscribe again" button, stored verbatim as the
    consent, in the language of the page (``tr``; the default locale when not given)."""
    tr = tr or i18n.translator(settings.default_locale)
    return tr.gettext(
        "I subscribe again to %(plan)s and authorise %(seller)s to charge my %(card)s %(amount)s now and "
        "%(every)s after that, until I cancel. I can cancel at any time from my account page.",
        plan=plan.name, seller=settings.seller_name or settings.company_name, card=card,
        amount=tr.money(plan.amount_minor, plan.currency),
        every=terms.every(tr, plan.interval, int(plan.interval_count or 1)))


def customer_card(s: Session, ok: Eligible) -> PaymentMethod | None:
    """The active card a customer's own reactivation would charge (None: none on file)."""
    pm_id = ok.payment_method_id
    if pm_id is None:
        cust = s.get_one(Customer, ok.customer_id)
        pm_id = cust.default_payment_method_id
    pm = s.get(PaymentMethod, pm_id) if pm_id else None
    return pm if pm is not None and pm.status == PaymentMethodStatus.ACTIVE and pm.customer_id == ok.customer_id \
        else None


def by_customer(
    engine: Engine, gateway: PaymentGateway, *, customer_id: str, subscription_id: str, card_label: str,
    ip_address: str, user_agent: str, settings: Settings, now: datetime, tr: i18n.Translator | None = None,
) -> Subscribed:
    """The self-service "Subscribe again": the customer's consent to the terms shown
    (``card_label`` is how the page named the card) is recorded and committed first, then
    the same :func:`reactivate` as an admin's (charged at once; a decline keeps nothing)."""
    with transaction(engine) as s:
        old = s.get(Subscription, subscription_id)
        if old is None or old.customer_id != customer_id:
            raise NotFound("no such subscription on this account", field="subscription")
        ok = check(s, old)
        pm = customer_card(s, ok)
        if pm is None:
            raise Conflict("there is no card on file to charge", field="payment_method")
        text = consent_text(settings, ok.plan, card_label, tr)
        consents.record(s, customer_id=customer_id, payment_method=pm, now=now, actor=CUSTOMER, data=ConsentInput(
            accepted_at=now, ip_address=ip_address, user_agent=user_agent or "unknown", terms_version=TERMS_VERSION,
            terms_text=text, amount_minor=ok.plan.amount_minor, currency=ok.plan.currency,
            interval=ok.plan.interval, interval_count=ok.plan.interval_count, channel="web", plan_id=ok.plan.id))
        pm_id = pm.id
    return reactivate(engine, gateway, subscription_id=subscription_id, now=now, payment_method=pm_id,
                      actor=CUSTOMER, schedule_days=tuple(settings.dunning_schedule_days))
