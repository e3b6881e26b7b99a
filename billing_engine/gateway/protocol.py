"""The payment gateway contract.

The engine talks to a payment processor only through :class:`PaymentGateway`.
Outcomes are values, not exceptions: a decline is a business outcome and is never
retried by tenacity. Only transient transport failures (network, 5xx, 429) are
retried inside an adapter, always with the same idempotency key; if they persist the
adapter returns ``ChargeStatus.UNKNOWN`` and the engine reconciles later via
:meth:`PaymentGateway.find_charge`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from billing_engine.errors import GatewayUnavailable


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REQUIRES_ACTION = "requires_action"  # not used by the shipped adapters for charge():
    # off-session authentication_required is DECLINED + HARD (see gateway/outcomes.py)
    UNKNOWN = "unknown"  # sent, but no answer: reconcile before anything new


class DeclineKind(StrEnum):
    HARD = "hard"  # never retry: cancel (involuntary) unless a new card arrives
    SOFT = "soft"  # retry per the dunning schedule


# Decline codes after which retrying the same card is pointless (or forbidden by the
# card networks). Everything else is soft.
HARD_DECLINE_CODES: frozenset[str] = frozenset(
    {
        "incorrect_number",
        "invalid_number",
        "lost_card",
        "pickup_card",
        "stolen_card",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "authentication_required",
        "highest_risk_level",
        "fraudulent",
        "expired_card",
        "restricted_card",
        "security_violation",
        "invalid_account",
        "new_account_information_available",
        "stop_payment_order",
        "do_not_honor_permanently",
    }
)


def classify_decline(code: str | None) -> DeclineKind:
    """Hard or soft for a Stripe ``decline_code`` (or error ``code``)."""
    if code and code in HARD_DECLINE_CODES:
        return DeclineKind.HARD
    return DeclineKind.SOFT


@dataclass(frozen=True, kw_only=True)
class ChargeRequest:
    amount_minor: int  # > 0, minor units of ``currency``
    currency: str  # ISO-4217, upper case (adapters lower-case it for Stripe)
    payment_method_token: str  # e.g. "pm_card_visa" / "pm_1Nx..."
    idempotency_key: str  # deterministic, from domain ids; reused on every retry
    gateway_customer_id: str | None = None  # e.g. "cus_..." (Stripe needs it off-session)
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # invoice/subscription/attempt ids


@dataclass(frozen=True, kw_only=True)
class ChargeResult:
    status: ChargeStatus
    gateway_charge_id: str | None = None  # PaymentIntent id ("pi_...")
    amount_minor: int | None = None
    currency: str | None = None
    decline_code: str | None = None
    decline_kind: DeclineKind | None = None
    message: str | None = None  # human readable reason from the processor


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RefundRequest:
    gateway_charge_id: str  # the PaymentIntent id that collected the money
    amount_minor: int  # > 0
    currency: str
    idempotency_key: str
    reason: str | None = None  # "requested_by_customer" | "duplicate" | "fraudulent"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RefundResult:
    status: RefundStatus
    gateway_refund_id: str | None = None
    amount_minor: int = 0
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class CardDetails:
    token: str
    brand: str  # "visa", "mastercard", ...
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetupResult:
    """Outcome of saving a card for off-session use (Stripe SetupIntent)."""

    status: str  # "succeeded" | "requires_action" | "failed"
    gateway_setup_id: str | None
    card: CardDetails | None
    message: str | None = None


class GatewayError(Exception):
    """A gateway call could not be completed (configuration, invalid request...).

    Not raised for declines (those are ``ChargeResult`` values) nor for transient
    failures that exhausted retries on a charge (``ChargeStatus.UNKNOWN``).
    """


class GatewayAuthError(GatewayError):
    """The gateway refused our credentials or account (401 / 403 / wrong account).

    Our configuration, never the customer's card: a run-cycle stops at once (exit 78),
    leaves the attempt unresolved, charges nothing more and e-mails no one."""


class IdempotencyConflict(GatewayError):
    """The same idempotency key was reused with different parameters."""


class GatewayUnreachable(GatewayError, GatewayUnavailable):
    """The payment gateway could not be reached (network, 5xx, 429), even after retries.

    Raised by refund / card_details / setup_off_session / find_charge (a charge returns
    ``ChargeStatus.UNKNOWN`` instead). Safe to try again later with the same
    idempotency key. Also a :class:`billing_engine.errors.GatewayUnavailable` (503).
    """


@runtime_checkable
class PaymentGateway(Protocol):
    name: str

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge off-session. Must be safe to call again with the same request."""
        ...

    def find_charge(
        self, idempotency_key: str, *, metadata: dict[str, str] | None = None
    ) -> ChargeResult | None:
        """Reconcile: what happened to a charge sent with this key? ``None`` if the
        processor never saw it (then it is safe to send it again with the same key)."""
        ...

    def refund(self, request: RefundRequest) -> RefundResult: ...

    def card_details(self, payment_method_token: str) -> CardDetails: ...

    def setup_off_session(
        self, *, payment_method_token: str, gateway_customer_id: str | None, idempotency_key: str
    ) -> SetupResult:
        """Save a card for off-session use (SetupIntent usage=off_session, confirm=True)."""
        ...


@runtime_checkable
class RecordsCallsTogether(Protocol):
    """Optional: a gateway that can record a run of calls made by one thread as ONE unit
    of its own bookkeeping (the fake gateway's durable ledger: one SQLite transaction
    instead of one per call). Inside ``together()`` the calls are answered as usual; they
    are recorded when the block ends, and a block that raises, or whose recording fails,
    leaves none of them recorded -- as if they had never reached the gateway. So the
    caller must not act on an answer before the block has ended without an error: the
    run-cycle settles a batch only after that."""

    def together(self) -> AbstractContextManager[None]: ...
