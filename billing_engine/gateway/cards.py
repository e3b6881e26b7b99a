"""Stripe's documented test payment methods, as data.

Both :class:`~billing_engine.gateway.fake.FakeGateway` and the Stripe simulator used
by the adapter tests read this table, so "pm_card_chargeDeclinedLostCard is a hard
decline" is written down once. Source: https://docs.stripe.com/testing (card
numbers give the ``last4``; every test card here expires 12/2034).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from billing_engine.gateway.outcomes import AUTHENTICATION_REQUIRED

TEST_EXP_MONTH = 12
TEST_EXP_YEAR = 2034

# Stripe's customer-facing messages for each decline (``error.message``).
DECLINE_MESSAGES: dict[str, str] = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "fraudulent": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "card_velocity_exceeded": "Your card was declined for making repeated attempts too frequently "
    "or exceeding its amount limit.",
    AUTHENTICATION_REQUIRED: "Your card was declined. This transaction requires authentication.",
}

# Decline codes that Stripe reports as the error ``code`` itself (not ``card_declined``).
_OWN_ERROR_CODE = {"expired_card", "incorrect_cvc", "processing_error", AUTHENTICATION_REQUIRED}


@dataclass(frozen=True, kw_only=True)
class TestCard:
    """One test payment method and what Stripe does with it off-session."""

    __test__ = False  # not a pytest class

    token: str
    brand: str
    last4: str
    funding: str = "credit"
    decline_code: str | None = None  # None: charges succeed
    setup_requires_action: bool = False  # SetupIntent needs the customer (3DS) on-session

    @property
    def error_code(self) -> str:
        """Stripe's error ``code`` for a declined charge (``decline_code`` may differ)."""
        if self.decline_code in _OWN_ERROR_CODE:
            return self.decline_code
        return "card_declined"

    @property
    def fingerprint(self) -> str:
        """Deterministic stand-in for Stripe's per-card-number fingerprint."""
        seed = f"{self.brand}:{self.last4}" if self.token.startswith("pm_card_") else self.token
        return hashlib.sha256(seed.encode()).hexdigest()[:16]


def decline_message(code: str) -> str:
    return DECLINE_MESSAGES.get(code, "Your card was declined.")


def _card(token: str, brand: str, last4: str, **kw: object) -> TestCard:
    return TestCard(token=token, brand=brand, last4=last4, **kw)  # type: ignore[arg-type]


_SUCCEEDING = [
    _card("pm_card_visa", "visa", "4242"),
    _card("pm_card_visa_debit", "visa", "5556", funding="debit"),
    _card("pm_card_mastercard", "mastercard", "4444"),
    _card("pm_card_mastercard_debit", "mastercard", "8210", funding="debit"),
    _card("pm_card_mastercard_prepaid", "mastercard", "5100", funding="prepaid"),
    _card("pm_card_amex", "amex", "0005"),
    _card("pm_card_discover", "discover", "1117"),
    _card("pm_card_diners", "diners", "0004"),
    _card("pm_card_jcb", "jcb", "0505"),
    _card("pm_card_unionpay", "unionpay", "0005"),
]

# suffix after "pm_card_" (and after "pm_card_visa_") -> (last4, decline code)
_DECLINING = {
    "chargeDeclined": ("0002", "generic_decline"),
    "chargeDeclinedInsufficientFunds": ("9995", "insufficient_funds"),
    "chargeDeclinedLostCard": ("9987", "lost_card"),
    "chargeDeclinedStolenCard": ("9979", "stolen_card"),
    "chargeDeclinedExpiredCard": ("0069", "expired_card"),
    "chargeDeclinedIncorrectCvc": ("0127", "incorrect_cvc"),
    "chargeDeclinedProcessingError": ("0119", "processing_error"),
    "chargeDeclinedFraudulent": ("0019", "fraudulent"),
    "chargeDeclinedVelocityLimitExceeded": ("6975", "card_velocity_exceeded"),
    "chargeCustomerFail": ("0341", "generic_decline"),
}


def _build() -> dict[str, TestCard]:
    cards = {c.token: c for c in _SUCCEEDING}
    for suffix, (last4, code) in _DECLINING.items():
        for prefix in ("pm_card_", "pm_card_visa_"):
            token = prefix + suffix
            cards[token] = _card(token, "visa", last4, decline_code=code)
    cards["pm_card_authenticationRequired"] = _card(
        "pm_card_authenticationRequired", "visa", "3184", decline_code=AUTHENTICATION_REQUIRED
    )
    cards["pm_card_authenticationRequiredOnSetup"] = _card(
        "pm_card_authenticationRequiredOnSetup",
        "visa",
        "3155",
        decline_code=AUTHENTICATION_REQUIRED,
        setup_requires_action=True,
    )
    return cards


TEST_CARDS: dict[str, TestCard] = _build()


def lookup(token: str) -> TestCard | None:
    """The documented test card for ``token``, or ``None`` if Stripe has no such token."""
    return TEST_CARDS.get(token)
