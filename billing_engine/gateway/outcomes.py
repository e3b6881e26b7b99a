"""Building :class:`ChargeResult` values the same way in every adapter.

One place decides what a decline looks like, so the fake and Stripe agree on
``decline_kind`` and on how ``authentication_required`` is reported.

``authentication_required`` policy: an off-session charge that needs the customer
(3-D Secure) is reported as ``ChargeStatus.DECLINED`` with
``decline_code="authentication_required"`` and ``decline_kind=DeclineKind.HARD``,
never as ``REQUIRES_ACTION``. Retrying it off-session is pointless: the customer has
to come back on-session (``gateway_charge_id`` names the PaymentIntent they can
confirm). ``REQUIRES_ACTION`` is only used by :class:`SetupResult` ("requires_action").
"""

from __future__ import annotations

from billing_engine.gateway.protocol import ChargeResult, ChargeStatus, classify_decline

AUTHENTICATION_REQUIRED = "authentication_required"
AUTHENTICATION_REQUIRED_MESSAGE = (
    "The card issuer requires the customer to authenticate this payment (3-D Secure); "
    "it cannot be charged off-session. The customer must come back on-session to "
    "confirm the payment or add another card."
)


def declined(
    code: str,
    *,
    message: str | None,
    charge_id: str | None,
    amount_minor: int | None,
    currency: str | None,
) -> ChargeResult:
    """A decline: a business outcome, hard or soft per :func:`classify_decline`."""
    if code == AUTHENTICATION_REQUIRED:
        message = AUTHENTICATION_REQUIRED_MESSAGE
    return ChargeResult(
        status=ChargeStatus.DECLINED,
        gateway_charge_id=charge_id,
        amount_minor=amount_minor,
        currency=currency.upper() if currency else None,
        decline_code=code,
        decline_kind=classify_decline(code),
        message=message,
    )


def succeeded(*, charge_id: str, amount_minor: int, currency: str) -> ChargeResult:
    return ChargeResult(
        status=ChargeStatus.SUCCEEDED,
        gateway_charge_id=charge_id,
        amount_minor=amount_minor,
        currency=currency.upper(),
    )


def unknown(
    *,
    amount_minor: int | None,
    currency: str | None,
    message: str,
    charge_id: str | None = None,
) -> ChargeResult:
    """Sent, but no final answer: the caller must reconcile with ``find_charge`` first."""
    return ChargeResult(
        status=ChargeStatus.UNKNOWN,
        gateway_charge_id=charge_id,
        amount_minor=amount_minor,
        currency=currency.upper() if currency else None,
        message=message,
    )
