"""StripeGateway: the :class:`PaymentGateway` for Stripe, through the official SDK.

* Charges are off-session PaymentIntents created with ``confirm=True``,
  ``automatic_payment_methods={"enabled": True, "allow_redirects": "never"}`` (so no
  ``return_url`` is needed; valid on every API version, unlike ``payment_method_types``,
  which the SDK's pinned version renamed) and the caller's idempotency key, which is also written to ``metadata["idempotency_key"]`` so
  :meth:`StripeGateway.find_charge` can find the PaymentIntent later.
* Only transient failures are retried (tenacity: exponential backoff with jitter,
  bounded attempts and total time, :class:`RetryPolicy`): ``RateLimitError``,
  ``APIConnectionError``, ``APIError`` (5xx / 409). Every retry reuses the same
  idempotency key, so Stripe creates at most one PaymentIntent. The SDK's own retries
  are off (``max_network_retries=0``). A charge still failing returns
  ``ChargeStatus.UNKNOWN``; other operations raise :class:`GatewayUnreachable`.
* ``CardError`` becomes a ``DECLINED`` result (``decline_code`` = Stripe's
  ``decline_code``, else its ``code``), hard or soft per ``classify_decline``.
  ``authentication_required`` is a hard decline, see :mod:`.outcomes`.
* ``InvalidRequestError`` / ``AuthenticationError`` / ``PermissionError`` raise
  ``GatewayError`` (never retried); ``IdempotencyError`` raises ``IdempotencyConflict``.
* Every request first takes a token from a client-side :class:`TokenBucket`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stripe
from stripe.params import PaymentIntentCreateParams, RefundCreateParams, SetupIntentCreateParams
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from billing_engine.gateway import outcomes
from billing_engine.gateway.protocol import (
    CardDetails,
    ChargeRequest,
    ChargeResult,
    GatewayAuthError,
    GatewayError,
    GatewayUnreachable,
    IdempotencyConflict,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SetupResult,
)
from billing_engine.gateway.rate_limit import SharedTokenBucket, TokenBucket, default_rate
from billing_engine.gateway.webhooks import WebhookSignatureInvalid, construct_event

__all__ = [
    "RetryPolicy",
    "StripeGateway",
    "WebhookSignatureInvalid",
    "construct_event",
    "intent_result",
    "is_transient",
]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to retry transient failures (same idempotency key every time)."""

    max_attempts: int = 4  # including the first try
    max_elapsed: float = 30.0  # seconds; no new attempt starts after this
    initial_wait: float = 0.5  # seconds before the first retry, doubled for each next one
    max_wait: float = 8.0  # cap of the doubling
    jitter: float = 0.5  # plus a random 0..jitter seconds on every wait


def is_transient(exc: BaseException) -> bool:
    """Network trouble, 429 or a 5xx/409 from Stripe: safe to retry with the same key."""
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.APIError):
        status = exc.http_status
        return status is None or status >= 500 or status == 409
    return False


class StripeGateway:
    """Stripe adapter. One :class:`stripe.StripeClient` per gateway.

    ``api_base`` (e.g. ``"http://127.0.0.1:12111"``) and ``http_client`` (any
    ``stripe.HTTPClient``) are for tests and local mocks. ``max_ops_per_second`` defaults to
    25 ops/s for test keys and 100 for live ones; pass ``rate_limiter`` to share one
    bucket between gateways. ``sleep`` is used for backoff waits (tests pass a no-op).
    """

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        http_client: stripe.HTTPClient | None = None,
        stripe_version: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_ops_per_second: float | None = None,
        rate_limiter: TokenBucket | SharedTokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise GatewayError("Stripe API key is missing")
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter or TokenBucket(max_ops_per_second or default_rate(api_key))
        self._sleep = sleep
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=http_client or stripe.RequestsClient(timeout=timeout),
            stripe_version=stripe_version,
            max_network_retries=0,
        )

    # -- PaymentGateway -----------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if request.amount_minor <= 0:
            raise GatewayError("charge amount must be a positive integer of minor units")
        params: PaymentIntentCreateParams = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method_token,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "off_session": True,
            "confirm": True,
            "metadata": {**request.metadata, "idempotency_key": request.idempotency_key},
        }
        if request.gateway_customer_id:
            params["customer"] = request.gateway_customer_id
        if request.description:
            params["description"] = request.description
        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}
        try:
            intent = self._call(lambda: self.client.v1.payment_intents.create(params=params, options=options))
        except stripe.CardError as exc:
            return _card_declined(exc, request)
        except stripe.IdempotencyError as exc:
            raise IdempotencyConflict(_reason(exc)) from exc
        except stripe.StripeError as exc:
            if is_transient(exc) or isinstance(exc, stripe.APIError):
                return outcomes.unknown(
                    amount_minor=request.amount_minor,
                    currency=request.currency,
                    message=f"no answer from Stripe after retries ({_reason(exc)}); reconcile with find_charge",
                )
            if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
                raise GatewayAuthError(f"Stripe refused our credentials: {_reason(exc)}") from exc
            raise GatewayError(f"Stripe refused the charge: {_reason(exc)}") from exc
        return intent_result(intent)

    def find_charge(self, idempotency_key: str, *, metadata: dict[str, str] | None = None) -> ChargeResult | None:
        """Search PaymentIntents by ``metadata['idempotency_key']``; ``metadata`` narrows.

        ``None``: Stripe has no such PaymentIntent *in its search index*, which can lag
        by up to a minute (an hour during incidents). Re-sending the charge with the
        same key is still safe: within 24 h Stripe replays the original answer instead
        of charging again. If Stripe cannot be reached the answer is a
        ``ChargeStatus.UNKNOWN`` result (still unknown: try again later), never ``None``.
        """
        query = f"metadata['idempotency_key']:'{_q(idempotency_key)}'"
        try:
            found = self._call(lambda: self.client.v1.payment_intents.search(params={"query": query, "limit": 10}))
        except stripe.StripeError as exc:
            if is_transient(exc):
                return outcomes.unknown(
                    amount_minor=None,
                    currency=None,
                    message=f"could not reach Stripe to reconcile ({_reason(exc)}); try again later",
                )
            if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
                raise GatewayAuthError(f"Stripe refused our credentials: {_reason(exc)}") from exc
            raise GatewayError(f"could not search for the charge: {_reason(exc)}") from exc
        intents = [
            i
            for i in found.get("data") or []
            if isinstance(i, dict) and all((i.get("metadata") or {}).get(k) == v for k, v in (metadata or {}).items())
        ]
        if not intents:
            return None
        intents.sort(key=lambda i: (i.get("status") == "succeeded", i.get("created") or 0))
        return intent_result(intents[-1])

    def refund(self, request: RefundRequest) -> RefundResult:
        if request.amount_minor <= 0:
            raise GatewayError("refund amount must be a positive integer of minor units")
        params: RefundCreateParams = {
            "payment_intent": request.gateway_charge_id,
            "amount": request.amount_minor,
            "metadata": {**request.metadata, "idempotency_key": request.idempotency_key},
        }
        if request.reason:
            params["reason"] = request.reason
        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}
        try:
            refund = self._call(lambda: self.client.v1.refunds.create(params=params, options=options))
        except stripe.IdempotencyError as exc:
            raise IdempotencyConflict(_reason(exc)) from exc
        except stripe.StripeError as exc:
            raise _error(f"refund {request.gateway_charge_id}", exc) from exc
        status = refund.get("status")
        mapped = {
            "succeeded": RefundStatus.SUCCEEDED,
            "pending": RefundStatus.PENDING,
            "requires_action": RefundStatus.PENDING,
        }.get(str(status), RefundStatus.FAILED)
        return RefundResult(
            status=mapped,
            gateway_refund_id=refund.get("id"),
            amount_minor=int(refund.get("amount") or 0),
            message=refund.get("failure_reason") if mapped is RefundStatus.FAILED else None,
        )

    def card_details(self, payment_method_token: str) -> CardDetails:
        try:
            pm = self._call(lambda: self.client.v1.payment_methods.retrieve(payment_method_token))
        except stripe.StripeError as exc:
            raise _error(f"read payment method {payment_method_token!r}", exc) from exc
        return _card_details(pm)

    def setup_off_session(
        self, *, payment_method_token: str, gateway_customer_id: str | None, idempotency_key: str
    ) -> SetupResult:
        params: SetupIntentCreateParams = {
            "payment_method": payment_method_token,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "usage": "off_session",
            "confirm": True,
            "expand": ["payment_method"],
            "metadata": {"idempotency_key": idempotency_key},
        }
        if gateway_customer_id:
            params["customer"] = gateway_customer_id
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key}
        try:
            intent = self._call(lambda: self.client.v1.setup_intents.create(params=params, options=options))
        except stripe.CardError as exc:
            body = _error_body(exc)
            setup = body.get("setup_intent") or {}
            return SetupResult(status="failed", gateway_setup_id=setup.get("id"), card=None, message=_reason(exc))
        except stripe.IdempotencyError as exc:
            raise IdempotencyConflict(_reason(exc)) from exc
        except stripe.StripeError as exc:
            raise _error("set up the card for off-session use", exc) from exc
        status, setup_id = intent.get("status"), intent.get("id")
        if status == "succeeded":
            pm = intent.get("payment_method")
            card = _card_details(pm) if isinstance(pm, dict) else self.card_details(str(pm))
            return SetupResult(status="succeeded", gateway_setup_id=setup_id, card=card)
        if status == "requires_action":
            return SetupResult(
                status="requires_action",
                gateway_setup_id=setup_id,
                card=None,
                message="the card issuer requires authentication (3-D Secure); "
                "the customer must complete it on-session",
            )
        error = intent.get("last_setup_error") or {}
        return SetupResult(
            status="failed",
            gateway_setup_id=setup_id,
            card=None,
            message=error.get("message") or f"SetupIntent {setup_id} is {status}",
        )

    # -- card update (self-service page) ---------------------------------------------

    def create_setup_checkout(
        self, *, currency: str, success_url: str, cancel_url: str, gateway_customer_id: str | None,
        metadata: dict[str, str], idempotency_key: str,
    ) -> tuple[str, str]:
        """A Checkout Session in ``setup`` mode (Stripe hosts the card form; no card data
        reaches us). ``metadata`` goes on the session and on its SetupIntent. Returns
        ``(session id, url)``."""
        params: dict[str, Any] = {
            "mode": "setup",
            "currency": currency.lower(),
            "payment_method_types": ["card"],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": metadata.get("card_update_id", ""),
            "metadata": metadata,
            "setup_intent_data": {"metadata": metadata},
        }
        if gateway_customer_id:
            params["customer"] = gateway_customer_id
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key}
        try:
            session = self._call(lambda: self.client.v1.checkout.sessions.create(
                params=params, options=options))  # type: ignore[arg-type]
        except stripe.IdempotencyError as exc:
            raise IdempotencyConflict(_reason(exc)) from exc
        except stripe.StripeError as exc:
            raise _error("create a card set-up Checkout Session", exc) from exc
        return str(session["id"]), str(session["url"])

    def setup_intent_card(self, setup_intent_id: str) -> tuple[str, CardDetails] | None:
        """The card a SetupIntent saved (``None`` unless it succeeded): (status, card)."""
        try:
            intent = self._call(lambda: self.client.v1.setup_intents.retrieve(
                setup_intent_id, params={"expand": ["payment_method"]}))
        except stripe.StripeError as exc:
            raise _error(f"read SetupIntent {setup_intent_id!r}", exc) from exc
        if intent.get("status") != "succeeded":
            return None
        pm = intent.get("payment_method")
        card = _card_details(pm) if isinstance(pm, dict) else self.card_details(str(pm))
        return str(intent["id"]), card

    # -- internals ----------------------------------------------------------------

    def _call(self, operation: Callable[[], Any]) -> dict[str, Any]:
        """One SDK call with rate limiting and transient retries; the answer as a dict."""
        policy = self.retry

        def attempt() -> Any:
            self.rate_limiter.acquire()
            try:
                return operation()
            except stripe.RateLimitError:
                slow_down = getattr(self.rate_limiter, "slow_down", None)
                if slow_down is not None:  # a shared bucket: every worker backs off
                    slow_down()
                raise

        retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_elapsed),
            wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + wait_random(0, policy.jitter),
            retry=retry_if_exception(is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        obj = retrying(attempt)
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def intent_result(intent: dict[str, Any]) -> ChargeResult:
    """A PaymentIntent (API answer or webhook ``data.object``) as a :class:`ChargeResult`."""
    status = intent.get("status")
    intent_id = intent.get("id")
    amount = intent.get("amount")
    currency = intent.get("currency")
    if status == "succeeded":
        return outcomes.succeeded(
            charge_id=str(intent_id),
            amount_minor=int(intent.get("amount_received") or amount or 0),
            currency=str(currency),
        )
    if status == "requires_action":  # off-session, so the customer is not there to act
        return outcomes.declined(
            outcomes.AUTHENTICATION_REQUIRED,
            message=None,
            charge_id=intent_id,
            amount_minor=amount,
            currency=currency,
        )
    if status in ("requires_payment_method", "requires_confirmation", "canceled"):
        error = intent.get("last_payment_error") or {}
        code = error.get("decline_code") or error.get("code")
        if not code:
            code = "canceled" if status == "canceled" else "generic_decline"
        return outcomes.declined(
            code,
            message=error.get("message") or f"PaymentIntent {intent_id} is {status}",
            charge_id=intent_id,
            amount_minor=amount,
            currency=currency,
        )
    # "processing" / "requires_capture": money may still move; look again later
    return outcomes.unknown(
        amount_minor=amount,
        currency=currency,
        charge_id=intent_id,
        message=f"PaymentIntent {intent_id} is {status}; reconcile later with find_charge",
    )


def _card_declined(exc: stripe.CardError, request: ChargeRequest) -> ChargeResult:
    body = _error_body(exc)
    code = body.get("decline_code") or exc.code or body.get("code") or "generic_decline"
    intent = body.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    return outcomes.declined(
        str(code),
        message=exc.user_message,
        charge_id=intent_id,
        amount_minor=request.amount_minor,
        currency=request.currency,
    )


def _card_details(pm: dict[str, Any]) -> CardDetails:
    card = pm.get("card")
    if pm.get("type") != "card" or not isinstance(card, dict):
        raise GatewayError(f"payment method {pm.get('id')!r} is not a card")
    return CardDetails(
        token=str(pm.get("id")),
        brand=str(card.get("brand")),
        last4=str(card.get("last4")),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
        fingerprint=card.get("fingerprint"),
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _reason(exc: stripe.StripeError) -> str:
    return exc.user_message or type(exc).__name__


def _error(action: str, exc: stripe.StripeError) -> GatewayError:
    """A non-charge failure: unreachable after retries, or refused by Stripe."""
    if is_transient(exc):
        return GatewayUnreachable(f"could not {action}: Stripe unreachable ({_reason(exc)})")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return GatewayAuthError(f"could not {action}: Stripe refused our credentials ({_reason(exc)})")
    return GatewayError(f"could not {action}: {_reason(exc)}")


def _q(value: str) -> str:
    """Quote a value for Stripe's search query language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
