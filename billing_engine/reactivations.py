"""Reactivation: a customer whose subscription ended subscribes again, linked to it.

The new subscription records ``reactivated_from`` (the old one stays as it was: its
churn is history) and a ``subscription.reactivated`` event; it is charged at once like
any subscribe (:mod:`billing_engine.first_charge`). The MRR report counts its first
payment as *reactivation* (a customer who had churned), not *new*. To take back a
cancellation that has not taken effect yet, use ``cancellations.undo`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from billing_engine import events, first_charge, subscriptions
from billing_engine.db import transaction
from billing_engine.errors import Conflict, InvalidTransition
from billing_engine.first_charge import PaymentBehavior, Subscribed
from billing_engine.gateway.protocol import PaymentGateway
from billing_engine.models import (
    LIVE_STATUSES,
    PaymentMethod,
    PaymentMethodStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE


def reactivate(
    engine: Engine, gateway: PaymentGateway, *, subscription_id: str, now: datetime, plan: str | None = None,
    payment_method: str | None = None, payment_behavior: PaymentBehavior = PaymentBehavior.ERROR_IF_INCOMPLETE,
    actor: str = "admin", schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
) -> Subscribed:
    with transaction(engine) as s:
        old = subscriptions.get(s, subscription_id)
        if old.status != SubscriptionStatus.CANCELED:
            raise InvalidTransition(
                f"subscription {old.id} is {old.status}: only an ended subscription is reactivated "
                "(a cancellation that has not taken effect yet is taken back with undo-cancel)", field="subscription")
        live = s.exec(select(Subscription).where(Subscription.customer_id == old.customer_id,
                                                 col(Subscription.status).in_(list(LIVE_STATUSES)))).first()
        if live is not None:
            raise Conflict(f"the customer already has a {live.status} subscription {live.id}", field="subscription",
                           subscription_id=live.id)
        old_plan = s.get_one(Plan, old.plan_id)
        pm_id = payment_method
        if pm_id is None and old.payment_method_id:
            pm = s.get(PaymentMethod, old.payment_method_id)
            pm_id = pm.id if pm is not None and pm.status == PaymentMethodStatus.ACTIVE else None
        customer_id, plan_ref = old.customer_id, plan or old_plan.code
    res = first_charge.subscribe(engine, gateway, customer=customer_id, plan=plan_ref, payment_method=pm_id,
                                 now=now, trial_days=0, payment_behavior=payment_behavior, reactivated_from=old.id,
                                 actor=actor, schedule_days=schedule_days)
    with transaction(engine) as s:
        events.record(s, events.EventType.SUBSCRIPTION_REACTIVATED, at=now, actor=actor,
                      subscription_id=res.subscription_id, customer_id=customer_id,
                      payload={"reactivated_from": subscription_id, "plan": plan_ref,
                               "first_charge": res.first_charge.status})
    return res
