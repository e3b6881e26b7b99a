"""Card updates from the customer's self-service page, with a fresh consent.

1. :func:`start`: the customer pressed "Update card" on the page bound to them. A
   :class:`CardUpdate` row keeps what they agreed to there: the exact text shown
   (:func:`consent_text`), the amount and interval of the subscription, their IP
   address and user agent, and when.
2. The card is collected by the gateway, never by our pages:
   * Stripe: a Checkout Session in ``setup`` mode (:func:`stripe_checkout`; Stripe hosts
     the card form). Its ``checkout.session.completed`` or ``setup_intent.succeeded``
     webhook (whichever comes first; the other changes nothing) calls
     :func:`complete` with the SetupIntent's card.
   * the fake gateway: a test-token form (``pm_card_visa`` ...) calls
     :func:`complete_with_token` (a SetupIntent-like off-session set-up first).
3. :func:`complete` stores the card and its consent (the SetupIntent id as the gateway's
   proof) and switches the subscription to it; a subscription in dunning is due at
   once (``next_retry_at = now``). The caller commits, then :func:`retry_now` charges it
   through the run-cycle's own exactly-once path (:func:`billing_engine.cycle.charge_now`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import card_setup, consents, i18n, payment_methods, subscriptions, terms
from billing_engine.db import locks_rows
from billing_engine.errors import Conflict, NotFound
from billing_engine.gateway.protocol import CardDetails, PaymentGateway
from billing_engine.models import (
    LIVE_STATUSES,
    CardUpdate,
    Customer,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing_engine.settings import Settings

TERMS_VERSION = "self-service-card-2026-01"
OPEN, COMPLETED, FAILED = "open", "completed", "failed"


def consent_text(settings: Settings, plan: Plan, tr: i18n.Translator | None = None) -> str:
    """The words shown next to the button, stored verbatim as the consent's terms, in the
    language of the page (``tr``; the default locale when not given)."""
    tr = tr or i18n.translator(settings.default_locale)
    return tr.gettext(
        "I authorise %(seller)s to charge the card I add now %(amount)s %(every)s for %(plan)s, and the amount "
        "now due if a payment is outstanding, until I cancel. I can cancel at any time from my account page.",
        seller=settings.seller_name or settings.company_name, plan=plan.name,
        amount=tr.money(plan.amount_minor, plan.currency),
        every=terms.every(tr, plan.interval, int(plan.interval_count or 1)))


def start(
    session: Session, *, customer_id: str, subscription_id: str, gateway: str, ip_address: str, user_agent: str,
    settings: Settings, now: datetime, tr: i18n.Translator | None = None,
) -> CardUpdate:
    """Record the customer's request and consent (validated now, stored on completion):
    the text is :func:`consent_text` in the language the card page showed it (``tr``)."""
    sub = session.get(Subscription, subscription_id)
    if sub is None or sub.customer_id != customer_id:
        raise NotFound("no such subscription on this account", field="subscription")
    if sub.status not in LIVE_STATUSES:
        raise Conflict("this subscription has ended; there is no card to update", field="subscription")
    plan = session.get(Plan, sub.plan_id)
    assert plan is not None
    text = consent_text(settings, plan, tr)
    update = CardUpdate(
        customer_id=customer_id, subscription_id=sub.id, gateway=gateway, status=OPEN,
        ip_address=(ip_address or "")[:64], user_agent=(user_agent or "unknown")[:1000], terms_version=TERMS_VERSION,
        terms_text=text, amount_minor=plan.amount_minor, currency=plan.currency, interval=plan.interval,
        interval_count=plan.interval_count, created_at=now,
    )
    consents.validate(_consent(update, accepted_at=now), now=now)  # a bad IP etc. is refused up front
    session.add(update)
    session.flush()
    return update


def _consent(update: CardUpdate, *, accepted_at: datetime, setup_id: str | None = None) -> consents.ConsentInput:
    return consents.ConsentInput(
        accepted_at=accepted_at, ip_address=update.ip_address, user_agent=update.user_agent,
        terms_version=update.terms_version, terms_text=update.terms_text, amount_minor=update.amount_minor,
        currency=update.currency, interval=update.interval, interval_count=update.interval_count, channel="web",
        gateway_setup_id=setup_id,
    )


def get_open(session: Session, update_id: str, customer_id: str) -> CardUpdate:
    update = session.get(CardUpdate, update_id)
    if update is None or update.customer_id != customer_id:
        raise NotFound("no such card update on this account", field="card_update")
    return update


@dataclass(frozen=True, kw_only=True)
class Completed:
    update_id: str
    subscription_id: str
    payment_method_id: str
    retry_now: bool  # the subscription was in dunning: charge it at once (after commit)


def complete(
    session: Session, update: CardUpdate, *, token: str, card: CardDetails, setup_id: str | None, gateway: str,
    now: datetime, actor: str = "customer",
) -> Completed:
    """Store the new card with the consent given on the page and put the subscription on it."""
    if update.status == COMPLETED and update.payment_method_id:
        return Completed(update_id=update.id, subscription_id=update.subscription_id,
                         payment_method_id=update.payment_method_id, retry_now=False)
    pm, _consent_row = payment_methods.add(
        session, customer_id=update.customer_id, token=token, gateway=gateway, card=card,
        consent=_consent(update, accepted_at=min(update.created_at, now), setup_id=setup_id), now=now, actor=actor)
    if (pm.brand, pm.last4) != (card.brand, card.last4) and card.last4:
        payment_methods.update_card(session, pm, card, now=now, actor=actor)
    sub = session.get(Subscription, update.subscription_id, with_for_update=locks_rows(session))
    assert sub is not None
    retry = False
    if sub.status in LIVE_STATUSES:
        subscriptions.change_payment_method(session, sub, pm.id, now=now, actor=actor)
        retry = sub.status == SubscriptionStatus.PAST_DUE
    update.status, update.payment_method_id, update.completed_at = COMPLETED, pm.id, now
    session.add(update)
    session.flush()
    return Completed(update_id=update.id, subscription_id=sub.id, payment_method_id=pm.id, retry_now=retry)


def complete_with_token(
    session: Session, gateway: PaymentGateway, update: CardUpdate, *, token: str, now: datetime,
) -> Completed:
    """The fake gateway's form: set the test token up off-session, then :func:`complete`.
    A refused card is a :class:`Conflict` / validation error and nothing is stored."""
    if update.status == COMPLETED:
        raise Conflict("this card update is already done", field="card_update")
    token = payment_methods.validate_token(token)
    customer = session.get(Customer, update.customer_id)
    assert customer is not None
    result = card_setup.set_up(gateway, token=token, gateway_customer_id=customer.gateway_customer_id,
                               idempotency_key=f"card_update:{update.id}:{token}")
    assert result.card is not None
    return complete(session, update, token=token, card=result.card, setup_id=result.gateway_setup_id,
                    gateway=gateway.name, now=now)


def retry_now(engine: Engine, gateway: PaymentGateway, subscription_id: str, *, now: datetime,
              settings: Settings) -> Any:
    """After the commit: charge a subscription in dunning at once on its new card."""
    from billing_engine.cycle import charge_now

    return charge_now(engine, gateway, subscription_id, now=now, settings=settings)


def find_for_stripe_object(session: Session, obj: dict[str, Any]) -> CardUpdate | None:
    """Our card update behind a Checkout Session or SetupIntent (metadata, or the session id)."""
    metadata = obj.get("metadata") or {}
    update = None
    if isinstance(metadata, dict) and isinstance(metadata.get("card_update_id"), str):
        update = session.get(CardUpdate, metadata["card_update_id"])
    if update is None and obj.get("object") == "checkout.session" and isinstance(obj.get("id"), str):
        update = session.exec(select(CardUpdate).where(CardUpdate.gateway_session_id == obj["id"])).first()
    if update is None and isinstance(obj.get("client_reference_id"), str):
        update = session.get(CardUpdate, obj["client_reference_id"])
    return update
