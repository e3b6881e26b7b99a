"""StripeGateway through the real SDK, its HTTP client swapped for the scripted Stripe."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import stripe

from billing_engine.errors import GatewayUnavailable
from billing_engine.gateway import (
    ChargeStatus,
    DeclineKind,
    GatewayError,
    GatewayUnreachable,
    IdempotencyConflict,
    RetryPolicy,
    StripeGateway,
    TokenBucket,
)
from billing_engine.gateway.rate_limit import default_rate

from .stripe_sim import Fault, Reply, StripeSim, fixture
from .test_contract import charge_request, refund_request

KEY = "inv_1:attempt_1"


def declined_body(code: str, error_code: str = "card_declined") -> dict[str, Any]:
    body = fixture("error_card_declined")
    body["error"].update(code=error_code, decline_code=code, message="Your card was declined.")
    pi = fixture("payment_intent")
    pi.update(id="pi_scripted", status="requires_payment_method")
    body["error"]["payment_intent"] = pi
    return body


def intent_body(status: str, **fields: Any) -> dict[str, Any]:
    pi = fixture("payment_intent")
    pi.update(id="pi_scripted", status=status, amount=1999, currency="usd", **fields)
    return pi


# -- what is sent -------------------------------------------------------------------


def test_charge_sends_an_off_session_confirmed_intent(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    stripe_gateway.charge(charge_request())
    [sent] = sim.requests
    assert (sent.method, sent.path, sent.idempotency_key) == ("post", "/v1/payment_intents", KEY)
    assert sent.params == {
        "amount": "1999",
        "currency": "usd",
        "customer": "cus_test",
        "description": "Pro plan, January",
        "payment_method": "pm_card_visa",
        "automatic_payment_methods": {"enabled": "true", "allow_redirects": "never"},
        "off_session": "true",
        "confirm": "true",
        "metadata": {"invoice_id": "inv_1", "attempt_id": "att_1", "idempotency_key": KEY},
    }


def test_api_base_is_configurable(sim: StripeSim) -> None:
    gateway = StripeGateway("sk_test_x", api_base="http://127.0.0.1:12111", http_client=sim)
    gateway.card_details("pm_card_visa")
    assert sim.requests[0].url == "http://127.0.0.1:12111/v1/payment_methods/pm_card_visa"


def test_missing_api_key_is_a_gateway_error() -> None:
    with pytest.raises(GatewayError, match="API key"):
        StripeGateway("")


# -- transient failures: retried with the same key --------------------------------------


def test_429_storm_then_success_makes_one_payment_intent(
    stripe_gateway: StripeGateway, sim: StripeSim, sleeps: list[float]
) -> None:
    sim.script(Fault.RATE_LIMIT, Fault.RATE_LIMIT, Fault.RATE_LIMIT)
    result = stripe_gateway.charge(charge_request())
    assert result.status is ChargeStatus.SUCCEEDED
    posts = sim.posts()
    assert len(posts) == 4
    assert {p.idempotency_key for p in posts} == {KEY}
    assert len(sim.payment_intents) == 1
    # exponential backoff (0.5, 1, 2 s) plus up to 0.5 s of jitter each
    assert len(sleeps) == 3
    for wait, base in zip(sleeps, (0.5, 1.0, 2.0), strict=True):
        assert base <= wait <= base + 0.5


def test_persistent_500s_end_unknown(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(*[Fault.SERVER_ERROR] * 4)
    result = stripe_gateway.charge(charge_request())
    assert result.status is ChargeStatus.UNKNOWN
    assert result.gateway_charge_id is None
    assert (result.amount_minor, result.currency) == (1999, "USD")
    assert result.message and "find_charge" in result.message
    assert len(sim.posts()) == 4 and {p.idempotency_key for p in sim.posts()} == {KEY}
    assert sim.payment_intents == {}


def test_500_then_success(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Fault.SERVER_ERROR)
    assert stripe_gateway.charge(charge_request()).status is ChargeStatus.SUCCEEDED
    assert len(sim.posts()) == 2


def test_connection_reset_is_retried(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Fault.CONNECTION_RESET, Fault.CONNECTION_RESET)
    assert stripe_gateway.charge(charge_request()).status is ChargeStatus.SUCCEEDED
    assert len(sim.posts()) == 3 and len(sim.payment_intents) == 1


def test_timeout_after_the_charge_went_through_replays_the_saved_answer(
    stripe_gateway: StripeGateway, sim: StripeSim
) -> None:
    sim.script(Fault.TIMEOUT_AFTER_COMMIT)
    result = stripe_gateway.charge(charge_request())
    assert result.status is ChargeStatus.SUCCEEDED
    assert len(sim.posts()) == 2
    assert [pi["id"] for pi in sim.succeeded_intents()] == [result.gateway_charge_id]


def test_timeout_then_network_down_is_unknown_then_found(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * 3)
    assert stripe_gateway.charge(charge_request()).status is ChargeStatus.UNKNOWN
    found = stripe_gateway.find_charge(KEY)
    assert found is not None and found.status is ChargeStatus.SUCCEEDED
    [pi] = sim.succeeded_intents()
    assert found.gateway_charge_id == pi["id"]
    search = sim.requests[-1]
    assert (search.method, search.path) == ("get", "/v1/payment_intents/search")
    assert search.params["query"] == f"metadata['idempotency_key']:'{KEY}'"


def test_search_lag_returns_none_and_resending_the_key_is_still_safe(
    stripe_gateway: StripeGateway, sim: StripeSim
) -> None:
    sim.script(Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * 3)
    stripe_gateway.charge(charge_request())
    sim.search_lags = True
    assert stripe_gateway.find_charge(KEY) is None
    assert stripe_gateway.charge(charge_request()).status is ChargeStatus.SUCCEEDED
    assert len(sim.payment_intents) == 1


def test_search_query_quotes_the_key(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    assert stripe_gateway.find_charge("it's", metadata={"invoice_id": "inv_9"}) is None
    assert sim.requests[0].params["query"] == "metadata['idempotency_key']:'it\\'s'"


def test_find_charge_when_stripe_is_down_is_still_unknown(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(*[Fault.SERVER_ERROR] * 4)
    found = stripe_gateway.find_charge(KEY)
    assert found is not None and found.status is ChargeStatus.UNKNOWN
    assert len(sim.requests) == 4


def test_find_charge_refused_by_stripe_is_an_error(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(400, fixture("error_invalid_request")))
    with pytest.raises(GatewayError):
        stripe_gateway.find_charge(KEY)


def test_retries_stop_after_max_elapsed(sim: StripeSim) -> None:
    sim.script(*[Fault.RATE_LIMIT] * 10)
    gateway = StripeGateway(
        "sk_test_x",
        http_client=sim,
        retry=RetryPolicy(max_attempts=10, max_elapsed=0.0, initial_wait=0, jitter=0),
        rate_limiter=TokenBucket(1e6, burst=1e6),
    )
    assert gateway.charge(charge_request()).status is ChargeStatus.UNKNOWN
    assert len(sim.posts()) == 1


# -- declines and refusals: never retried ---------------------------------------------


@pytest.mark.parametrize(
    ("decline_code", "error_code"),
    [
        ("expired_card", "expired_card"),
        ("lost_card", "card_declined"),
        ("stolen_card", "card_declined"),
        ("fraudulent", "card_declined"),
        ("pickup_card", "card_declined"),
        ("do_not_honor_permanently", "card_declined"),
        ("authentication_required", "authentication_required"),
    ],
)
def test_card_error_hard_codes(
    stripe_gateway: StripeGateway, sim: StripeSim, decline_code: str, error_code: str
) -> None:
    sim.script(Reply(402, declined_body(decline_code, error_code)))
    result = stripe_gateway.charge(charge_request())
    assert result.status is ChargeStatus.DECLINED
    assert (result.decline_code, result.decline_kind) == (decline_code, DeclineKind.HARD)
    assert result.gateway_charge_id == "pi_scripted"
    assert len(sim.requests) == 1


def test_card_error_without_decline_code_uses_the_error_code(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    body = declined_body("x", "incorrect_cvc")
    del body["error"]["decline_code"]
    sim.script(Reply(402, body))
    result = stripe_gateway.charge(charge_request())
    assert (result.decline_code, result.decline_kind) == ("incorrect_cvc", DeclineKind.SOFT)


def test_requires_action_answer_is_a_hard_authentication_decline(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(200, intent_body("requires_action", next_action={"type": "use_stripe_sdk"})))
    result = stripe_gateway.charge(charge_request())
    assert result.status is ChargeStatus.DECLINED
    assert (result.decline_code, result.decline_kind) == ("authentication_required", DeclineKind.HARD)
    assert result.message and "on-session" in result.message


def test_processing_intent_is_unknown_with_its_id(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(200, intent_body("processing", last_payment_error=None)))
    result = stripe_gateway.charge(charge_request())
    assert (result.status, result.gateway_charge_id) == (ChargeStatus.UNKNOWN, "pi_scripted")


def test_requires_payment_method_intent_is_a_decline(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    sim.script(Reply(200, intent_body("requires_payment_method", last_payment_error=error)))
    result = stripe_gateway.charge(charge_request())
    assert (result.status, result.decline_code) == (ChargeStatus.DECLINED, "insufficient_funds")


def test_invalid_request_is_an_error_not_retried(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(400, fixture("error_invalid_request")))
    with pytest.raises(GatewayError, match="Refund amount") as caught:
        stripe_gateway.charge(charge_request())
    assert not isinstance(caught.value, GatewayUnreachable)
    assert len(sim.requests) == 1


def test_bad_api_key_is_an_error_not_retried(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(401, fixture("error_authentication")))
    with pytest.raises(GatewayError, match="Invalid API Key"):
        stripe_gateway.charge(charge_request())
    assert len(sim.requests) == 1


def test_idempotency_error_is_a_conflict(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(400, fixture("error_idempotency")))
    with pytest.raises(IdempotencyConflict):
        stripe_gateway.charge(charge_request())


# -- refunds, cards, setup ------------------------------------------------------------------


def test_refund_sends_the_intent_amount_and_key(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    charge_id = stripe_gateway.charge(charge_request()).gateway_charge_id
    assert charge_id
    stripe_gateway.refund(refund_request(charge_id, 500, "refund_1"))
    sent = sim.posts("/v1/refunds")[0]
    assert sent.idempotency_key == "refund_1"
    assert (sent.params["payment_intent"], sent.params["amount"]) == (charge_id, "500")


def test_refund_of_nothing_is_refused_before_calling_stripe(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    with pytest.raises(GatewayError, match="positive"):
        stripe_gateway.refund(refund_request("pi_x", -5, "refund_1"))
    assert sim.requests == []


def test_refund_when_stripe_is_down_is_unavailable(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    charge_id = stripe_gateway.charge(charge_request()).gateway_charge_id
    assert charge_id
    sim.script(*[Fault.CONNECTION_RESET] * 4)
    with pytest.raises(GatewayUnavailable):  # also a GatewayUnreachable / GatewayError
        stripe_gateway.refund(refund_request(charge_id, 500, "refund_1"))
    assert {r.idempotency_key for r in sim.posts("/v1/refunds")} == {"refund_1"}


def test_pending_refund(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    refund = fixture("refund")
    refund.update(status="pending", amount=700)
    sim.script(Reply(200, refund))
    result = stripe_gateway.refund(refund_request("pi_x", 700, "refund_1"))
    assert (result.status.value, result.amount_minor) == ("pending", 700)


def test_setup_intent_parameters(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    stripe_gateway.setup_off_session(
        payment_method_token="pm_card_visa", gateway_customer_id="cus_1", idempotency_key="setup_1"
    )
    [sent] = sim.requests
    assert (sent.path, sent.idempotency_key) == ("/v1/setup_intents", "setup_1")
    assert sent.params["usage"] == "off_session"
    assert (sent.params["confirm"], sent.params["customer"]) == ("true", "cus_1")


def test_setup_card_error_is_failed(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    sim.script(Reply(402, declined_body("generic_decline")))
    setup = stripe_gateway.setup_off_session(
        payment_method_token="pm_card_visa", gateway_customer_id=None, idempotency_key="setup_1"
    )
    assert (setup.status, setup.card) == ("failed", None)


def test_non_card_payment_method_is_an_error(stripe_gateway: StripeGateway, sim: StripeSim) -> None:
    pm = fixture("payment_method")
    pm.update(type="sepa_debit", card=None)
    sim.script(Reply(200, pm))
    with pytest.raises(GatewayError, match="not a card"):
        stripe_gateway.card_details("pm_sepa")


# -- rate limiting --------------------------------------------------------------------------


def test_every_request_takes_a_rate_limit_token(sim: StripeSim) -> None:
    taken: list[float] = []

    class CountingBucket(TokenBucket):
        def acquire(self) -> float:
            taken.append(1)
            return 0.0

    gateway = StripeGateway("sk_test_x", http_client=sim, rate_limiter=CountingBucket(1), sleep=lambda s: None)
    sim.script(Fault.RATE_LIMIT, Fault.RATE_LIMIT)
    gateway.charge(charge_request())
    gateway.card_details("pm_card_visa")
    assert len(taken) == len(sim.requests) == 4


def test_default_rate_depends_on_the_key() -> None:
    assert default_rate("sk_test_abc") == 25
    assert default_rate("rk_test_abc") == 25
    assert default_rate("sk_live_abc") == 100
    assert StripeGateway("sk_test_abc", http_client=StripeSim()).rate_limiter.rate == 25
    assert StripeGateway("sk_live_abc", max_ops_per_second=7).rate_limiter.rate == 7


# -- the real HTTP client, against 127.0.0.1 ------------------------------------------------


def test_real_http_client_connection_refused_is_unknown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    gateway = StripeGateway(
        "sk_test_x",
        api_base=f"http://127.0.0.1:{port}",
        timeout=2,
        retry=RetryPolicy(max_attempts=2, initial_wait=0, jitter=0),
        sleep=lambda s: None,
    )
    result = gateway.charge(charge_request())
    assert result.status is ChargeStatus.UNKNOWN
    assert isinstance(gateway.client, stripe.StripeClient)
