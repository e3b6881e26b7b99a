"""Signed customer links: the one-click cancel link e-mailed to every customer.

A cancel token is the subscription id signed with the newest secret key (HMAC-SHA256,
itsdangerous, salt ``"cancel-link"``) plus the time it was issued; every key of
``settings.signing_keys()`` still verifies, so keys can be rotated without breaking links
already e-mailed. It is bound to one
subscription, expires after ``settings.cancel_link_max_age_days`` and cannot be forged
or guessed. The token IS the capability: whoever holds it may see the subscription's
cancel page and cancel it, without logging in (German §312k BGB, California ARL).

"Now" is a parameter: tokens issued by a simulated run (``billing run-cycle --at``)
carry the simulated time, and are verified against the app's clock. Whatever the issue
time, a link never works for longer than :data:`MAX_LIFETIME` from the verifier's "now":
a link minted "in the future" (``billing cancel-link --at 2999-...``) does not verify.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from billing_engine.errors import BillingError
from billing_engine.settings import Settings

SALT = "cancel-link"
ACCOUNT_SALT = "account-link"  # the self-service page: bound to a customer, not a subscription
MAX_TOKEN_LENGTH = 400  # a real token is ~110 characters
MAX_LIFETIME = timedelta(days=400)  # no link verifies for longer than this from "now"


class InvalidCancelLink(BillingError):
    """This cancel link is not valid."""

    http_status = 404
    exit_code = 3
    code = "invalid_cancel_link"


class ExpiredCancelLink(InvalidCancelLink):
    """This cancel link has expired."""

    http_status = 400
    code = "expired_cancel_link"

    def __init__(self, message: str | None = None, *, subscription_id: str, issued_at: datetime | None) -> None:
        super().__init__(message, field="token", subscription_id=subscription_id)
        #: the signature was valid, so this id is authentic (safe to e-mail a fresh link)
        self.subscription_id = subscription_id
        self.issued_at = issued_at


class _ClockSigner(TimestampSigner):
    """A timestamp signer whose "now" is given, not read from the system clock."""

    def __init__(self, *args: Any, now: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return self._now


def itsdangerous_keys(settings: Settings) -> list[str]:
    """The secret keys in itsdangerous' order (oldest first, the LAST one signs)."""
    return list(reversed(settings.signing_keys()))


def _serializer(settings: Settings, now: datetime, salt: str = SALT) -> URLSafeTimedSerializer:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return URLSafeTimedSerializer(
        itsdangerous_keys(settings),
        salt=salt,
        signer=_ClockSigner,
        signer_kwargs={"now": int(now.timestamp()), "digest_method": hashlib.sha256},
    )


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def max_age(settings: Settings) -> timedelta:
    return min(timedelta(days=settings.cancel_link_max_age_days), MAX_LIFETIME)


def max_issue_ahead(settings: Settings) -> timedelta:
    """How far ahead of "now" a link may have been issued and still verify."""
    return MAX_LIFETIME - max_age(settings)


def make_cancel_token(settings: Settings, subscription_id: str, now: datetime | None = None) -> str:
    """A URL-safe signed token for ``subscription_id``, issued at ``now``."""
    if not subscription_id:
        raise ValueError("subscription_id is required")
    return str(_serializer(settings, _now(now)).dumps(subscription_id))


def make_cancel_url(settings: Settings, subscription_id: str, now: datetime | None = None) -> str:
    """``settings.public_base_url`` + ``/cancel/`` + a fresh token."""
    base = settings.public_base_url.rstrip("/")
    return f"{base}/cancel/{make_cancel_token(settings, subscription_id, now)}"


def expires_at(settings: Settings, now: datetime | None = None) -> datetime:
    """When a link issued at ``now`` stops working."""
    return _now(now).replace(microsecond=0) + max_age(settings)


def verify_cancel_token(settings: Settings, token: str, now: datetime | None = None) -> str:
    """The subscription id a token was issued for.

    Raises :class:`ExpiredCancelLink` (genuine but too old; carries the subscription id)
    or :class:`InvalidCancelLink` (tampered, truncated, signed with another key or for
    another purpose)."""
    return _verify(settings, token, now, SALT)


def _verify(settings: Settings, token: str, now: datetime | None, salt: str) -> str:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidCancelLink(field="token")
    now = _now(now)
    serializer = _serializer(settings, now, salt)
    try:
        value, issued = serializer.loads(token, return_timestamp=True)
    except BadData:
        raise InvalidCancelLink(field="token") from None
    if not isinstance(value, str) or not value:
        raise InvalidCancelLink(field="token")
    # A token "from the future" (issued by a run simulated ahead with --at, or clock
    # skew between machines) is genuine: only the key holder can sign one. Accept it, but
    # only while its whole lifetime stays within MAX_LIFETIME of now (no 1,000-year links).
    if issued - now > max_issue_ahead(settings):
        raise InvalidCancelLink(field="token")
    if now - issued > max_age(settings):
        raise ExpiredCancelLink(subscription_id=value, issued_at=issued)
    return value


# --------------------------------------------------------------------------- self-service


def make_account_token(settings: Settings, customer_id: str, now: datetime | None = None) -> str:
    """A signed token for the customer's self-service page (salt ``"account-link"``: a
    cancel token never opens it, nor the reverse); same keys, rotation and lifetime."""
    if not customer_id:
        raise ValueError("customer_id is required")
    return str(_serializer(settings, _now(now), ACCOUNT_SALT).dumps(customer_id))


def make_account_url(settings: Settings, customer_id: str, now: datetime | None = None) -> str:
    """``settings.public_base_url`` + ``/account/`` + a fresh token."""
    base = settings.public_base_url.rstrip("/")
    return f"{base}/account/{make_account_token(settings, customer_id, now)}"


def verify_account_token(settings: Settings, token: str, now: datetime | None = None) -> str:
    """The customer id a self-service token was issued for. Raises :class:`ExpiredCancelLink`
    (genuine but too old; its ``subscription_id`` holds the customer id) or
    :class:`InvalidCancelLink`."""
    return _verify(settings, token, now, ACCOUNT_SALT)


__all__ = [
    "ACCOUNT_SALT",
    "SALT",
    "ExpiredCancelLink",
    "InvalidCancelLink",
    "MAX_LIFETIME",
    "expires_at",
    "itsdangerous_keys",
    "max_issue_ahead",
    "make_cancel_token",
    "make_account_token",
    "make_account_url",
    "make_cancel_url",
    "verify_account_token",
    "verify_cancel_token",
]
