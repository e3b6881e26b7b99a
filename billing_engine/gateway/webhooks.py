"""Verifying Stripe webhook signatures (the endpoint and its effects live elsewhere)."""

from __future__ import annotations

from typing import Any

import stripe

from billing_engine.gateway.protocol import GatewayError


class WebhookSignatureInvalid(GatewayError):
    """The webhook's Stripe-Signature header is missing, forged or stale."""


def construct_event(payload: bytes | str, sig_header: str | None, secret: str, tolerance: int = 300) -> dict[str, Any]:
    """The verified Stripe event as a plain dict.

    ``payload`` must be the raw request body, byte for byte. Raises
    :class:`WebhookSignatureInvalid` for a missing, forged or stale (older than
    ``tolerance`` seconds) signature and ``GatewayError`` for a signed body that is
    not a Stripe event. Answer 400 to Stripe for either.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be > 0 seconds (0 would accept replayed webhooks)")
    if not secret:
        raise GatewayError("the webhook signing secret (whsec_...) is not configured")
    if not sig_header:
        raise WebhookSignatureInvalid("the Stripe-Signature header is missing")
    try:
        event = stripe.Webhook.construct_event(payload, sig_header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureInvalid(f"invalid Stripe-Signature: {exc.user_message or 'verification failed'}") from exc
    except ValueError as exc:  # bad JSON, or a thin event notification
        raise GatewayError(f"the webhook body is not a Stripe event: {exc}") from exc
    data: dict[str, Any] = event.to_dict()
    return data
