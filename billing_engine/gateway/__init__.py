"""Payment gateways: the contract, the Stripe adapter and the in-memory fake.

The Stripe names are imported lazily, so ``import billing_engine.gateway.protocol``
does not load the Stripe SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billing_engine.gateway.fake import FakeGateway, LedgerEntry
from billing_engine.gateway.protocol import (
    HARD_DECLINE_CODES,
    CardDetails,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    DeclineKind,
    GatewayError,
    GatewayUnreachable,
    IdempotencyConflict,
    PaymentGateway,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SetupResult,
    classify_decline,
)
from billing_engine.gateway.rate_limit import TokenBucket

if TYPE_CHECKING:
    from billing_engine.gateway.stripe import RetryPolicy, StripeGateway
    from billing_engine.gateway.webhooks import WebhookSignatureInvalid, construct_event

_LAZY = {
    "RetryPolicy": "billing_engine.gateway.stripe",
    "StripeGateway": "billing_engine.gateway.stripe",
    "WebhookSignatureInvalid": "billing_engine.gateway.webhooks",
    "construct_event": "billing_engine.gateway.webhooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HARD_DECLINE_CODES",
    "CardDetails",
    "ChargeRequest",
    "ChargeResult",
    "ChargeStatus",
    "DeclineKind",
    "FakeGateway",
    "GatewayError",
    "GatewayUnreachable",
    "IdempotencyConflict",
    "LedgerEntry",
    "PaymentGateway",
    "RefundRequest",
    "RefundResult",
    "RefundStatus",
    "RetryPolicy",
    "SetupResult",
    "StripeGateway",
    "TokenBucket",
    "WebhookSignatureInvalid",
    "classify_decline",
    "construct_event",
]
