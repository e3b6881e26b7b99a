"""Saving a card for off-session charges through the gateway, with its consent.

:func:`add_with_setup` asks the gateway to set the card up for off-session use (Stripe:
a SetupIntent with ``usage=off_session, confirm=True``) and only when that succeeded
stores the payment method and the consent, with the SetupIntent id
(``consents.gateway_setup_id``) as the gateway's proof of the mandate. A card that
needs the customer (3-D Secure, ``requires_action``) or that the issuer refused is a
:class:`Conflict` and nothing is stored.

The gateway is called inside the caller's transaction (the customer is read first),
so keep that transaction short: validation happens before the call.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlmodel import Session

from billing_engine import consents, customers, payment_methods
from billing_engine.errors import Conflict, ValidationError
from billing_engine.gateway.protocol import (
    GatewayError,
    GatewayUnreachable,
    IdempotencyConflict,
    PaymentGateway,
    SetupResult,
)
from billing_engine.models import Consent, PaymentMethod


def setup_key(customer_id: str, token: str, consent: consents.ConsentInput) -> str:
    """Deterministic, from domain ids: re-running the same request reuses the SetupIntent."""
    return f"card_setup:{customer_id}:{token}:{int(consent.accepted_at.timestamp())}"


def add_with_setup(
    session: Session,
    gateway: PaymentGateway,
    *,
    customer_id: str,
    token: str,
    consent: consents.ConsentInput,
    now: datetime,
    actor: str = "admin",
) -> tuple[PaymentMethod, Consent]:
    """Set the card up for off-session charges, then store it with its consent."""
    token = payment_methods.validate_token(token)
    consents.validate(consent, now=now)
    customer = customers.get(session, customer_id)
    result = set_up(gateway, token=token, gateway_customer_id=customer.gateway_customer_id,
                    idempotency_key=setup_key(customer.id, token, consent))
    assert result.card is not None
    return payment_methods.add(
        session,
        customer_id=customer.id,
        token=token,
        gateway=gateway.name,
        card=result.card,
        consent=replace(consent, gateway_setup_id=result.gateway_setup_id),
        now=now,
        actor=actor,
    )


def set_up(gateway: PaymentGateway, *, token: str, gateway_customer_id: str | None, idempotency_key: str) -> SetupResult:
    """Ask the gateway to set the card up for off-session charges; anything but success
    raises (:class:`Conflict` / :class:`ValidationError`, or ``GatewayUnreachable``)."""
    try:
        result = gateway.setup_off_session(
            payment_method_token=token, gateway_customer_id=gateway_customer_id, idempotency_key=idempotency_key,
        )
    except GatewayUnreachable:
        raise  # 503 / exit 75: nothing stored, safe to retry
    except IdempotencyConflict as exc:
        raise Conflict(f"this card set-up was already requested with other details: {exc}", field="token") from None
    except GatewayError as exc:
        raise ValidationError(f"the gateway refused this card: {exc}", field="token") from None
    if result.status == "requires_action":
        raise Conflict(
            "the card issuer requires the customer to authenticate (3-D Secure) before the card can be "
            f"charged off-session; nothing was stored (SetupIntent {result.gateway_setup_id})",
            field="token",
        )
    if result.status != "succeeded" or result.card is None:
        raise Conflict(
            f"the card could not be set up for off-session charges: {result.message or result.status}; "
            "nothing was stored",
            field="token",
        )
    return result
