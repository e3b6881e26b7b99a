"""One contract, two gateways: the fake must behave like Stripe does through the adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from billing_engine.gateway import (
    ChargeRequest,
    ChargeStatus,
    DeclineKind,
    FakeGateway,
    GatewayError,
    IdempotencyConflict,
    PaymentGateway,
    RefundRequest,
    RefundStatus,
    StripeGateway,
)

from .stripe_sim import Fault, StripeSim


@dataclass
class Harness:
    gateway: PaymentGateway
    lose_next_answer: Callable[[], None]  # next charge goes through, its answer is lost
    money_moves: Callable[[], int]  # how many charges actually collected money


def charge_request(token: str = "pm_card_visa", key: str = "inv_1:attempt_1", **kw: object) -> ChargeRequest:
    values: dict[str, object] = {
        "amount_minor": 1999,
        "currency": "USD",
        "payment_method_token": token,
        "idempotency_key": key,
        "gateway_customer_id": "cus_test",
        "description": "Pro plan, January",
        "metadata": {"invoice_id": "inv_1", "attempt_id": "att_1"},
    }
    values.update(kw)
    return ChargeRequest(**values)  # type: ignore[arg-type]


def refund_request(charge_id: str, amount: int, key: str, currency: str = "USD") -> RefundRequest:
    return RefundRequest(gateway_charge_id=charge_id, amount_minor=amount, currency=currency, idempotency_key=key)


class GatewayContract:
    """Scenarios every PaymentGateway must pass. Subclasses provide ``harness``."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise NotImplementedError

    def test_is_a_payment_gateway(self, harness: Harness) -> None:
        assert isinstance(harness.gateway, PaymentGateway)

    def test_visa_charge_succeeds(self, harness: Harness) -> None:
        result = harness.gateway.charge(charge_request())
        assert result.status is ChargeStatus.SUCCEEDED
        assert result.gateway_charge_id and result.gateway_charge_id.startswith("pi_")
        assert (result.amount_minor, result.currency) == (1999, "USD")
        assert result.decline_code is None
        assert harness.money_moves() == 1

    @pytest.mark.parametrize(
        ("token", "code"),
        [
            ("pm_card_chargeDeclined", "generic_decline"),
            ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
            ("pm_card_chargeDeclinedProcessingError", "processing_error"),
            ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
            ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ],
    )
    def test_soft_decline_is_a_retryable_outcome(self, harness: Harness, token: str, code: str) -> None:
        result = harness.gateway.charge(charge_request(token))
        assert result.status is ChargeStatus.DECLINED
        assert (result.decline_code, result.decline_kind) == (code, DeclineKind.SOFT)
        assert result.message
        assert harness.money_moves() == 0

    @pytest.mark.parametrize(
        ("token", "code"),
        [
            ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
            ("pm_card_chargeDeclinedLostCard", "lost_card"),
            ("pm_card_chargeDeclinedStolenCard", "stolen_card"),
            ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
            ("pm_card_authenticationRequired", "authentication_required"),
            ("pm_card_authenticationRequiredOnSetup", "authentication_required"),
        ],
    )
    def test_hard_decline_is_final(self, harness: Harness, token: str, code: str) -> None:
        result = harness.gateway.charge(charge_request(token))
        assert result.status is ChargeStatus.DECLINED
        assert (result.decline_code, result.decline_kind) == (code, DeclineKind.HARD)
        assert harness.money_moves() == 0

    def test_authentication_required_tells_customer_to_come_back_on_session(self, harness: Harness) -> None:
        result = harness.gateway.charge(charge_request("pm_card_authenticationRequired"))
        assert result.status is ChargeStatus.DECLINED  # never REQUIRES_ACTION off-session
        assert result.message and "on-session" in result.message
        assert result.gateway_charge_id  # the PaymentIntent the customer can confirm

    def test_replaying_a_key_returns_the_same_result_without_a_second_charge(self, harness: Harness) -> None:
        first = harness.gateway.charge(charge_request())
        again = harness.gateway.charge(charge_request())
        assert again == first
        assert harness.money_moves() == 1

    def test_replaying_a_declined_key_returns_the_same_decline(self, harness: Harness) -> None:
        token = "pm_card_chargeDeclinedInsufficientFunds"
        first = harness.gateway.charge(charge_request(token))
        assert harness.gateway.charge(charge_request(token)) == first

    def test_reusing_a_key_with_other_parameters_is_a_conflict(self, harness: Harness) -> None:
        harness.gateway.charge(charge_request())
        with pytest.raises(IdempotencyConflict):
            harness.gateway.charge(charge_request(amount_minor=2999))
        assert harness.money_moves() == 1

    def test_new_key_charges_again(self, harness: Harness) -> None:
        harness.gateway.charge(charge_request(key="inv_1:attempt_1"))
        harness.gateway.charge(charge_request(key="inv_2:attempt_1"))
        assert harness.money_moves() == 2

    def test_unknown_payment_method_is_an_error(self, harness: Harness) -> None:
        with pytest.raises(GatewayError):
            harness.gateway.charge(charge_request("card_1234"))
        with pytest.raises(GatewayError):
            harness.gateway.card_details("card_1234")

    def test_zero_amount_is_refused(self, harness: Harness) -> None:
        with pytest.raises(GatewayError):
            harness.gateway.charge(charge_request(amount_minor=0))
        assert harness.money_moves() == 0

    def test_full_refund(self, harness: Harness) -> None:
        charged = harness.gateway.charge(charge_request())
        assert charged.gateway_charge_id
        refund = harness.gateway.refund(refund_request(charged.gateway_charge_id, 1999, "rf_1"))
        assert refund.status is RefundStatus.SUCCEEDED
        assert refund.amount_minor == 1999
        assert refund.gateway_refund_id and refund.gateway_refund_id.startswith("re_")

    def test_partial_refunds_up_to_the_amount_collected(self, harness: Harness) -> None:
        charge_id = harness.gateway.charge(charge_request()).gateway_charge_id
        assert charge_id
        assert harness.gateway.refund(refund_request(charge_id, 999, "rf_1")).amount_minor == 999
        assert harness.gateway.refund(refund_request(charge_id, 1000, "rf_2")).amount_minor == 1000
        with pytest.raises(GatewayError, match="greater than|exceeds"):
            harness.gateway.refund(refund_request(charge_id, 1, "rf_3"))

    def test_refund_larger_than_the_charge_is_refused(self, harness: Harness) -> None:
        charge_id = harness.gateway.charge(charge_request()).gateway_charge_id
        assert charge_id
        harness.gateway.refund(refund_request(charge_id, 1500, "rf_1"))
        with pytest.raises(GatewayError, match="greater than|exceeds"):
            harness.gateway.refund(refund_request(charge_id, 500, "rf_2"))

    def test_refund_replay_does_not_refund_twice(self, harness: Harness) -> None:
        charge_id = harness.gateway.charge(charge_request()).gateway_charge_id
        assert charge_id
        first = harness.gateway.refund(refund_request(charge_id, 1000, "rf_1"))
        assert harness.gateway.refund(refund_request(charge_id, 1000, "rf_1")) == first
        # 999 left: a second 1000 would be refused had the replay refunded again
        assert harness.gateway.refund(refund_request(charge_id, 999, "rf_2")).amount_minor == 999

    def test_refund_of_zero_or_a_declined_charge_is_refused(self, harness: Harness) -> None:
        declined = harness.gateway.charge(charge_request("pm_card_chargeDeclined"))
        assert declined.gateway_charge_id
        with pytest.raises(GatewayError):
            harness.gateway.refund(refund_request(declined.gateway_charge_id, 100, "rf_1"))
        charged = harness.gateway.charge(charge_request(key="k2"))
        assert charged.gateway_charge_id
        with pytest.raises(GatewayError):
            harness.gateway.refund(refund_request(charged.gateway_charge_id, 0, "rf_2"))

    @pytest.mark.parametrize(
        ("token", "brand", "last4"),
        [
            ("pm_card_visa", "visa", "4242"),
            ("pm_card_mastercard", "mastercard", "4444"),
            ("pm_card_amex", "amex", "0005"),
            ("pm_card_chargeDeclinedExpiredCard", "visa", "0069"),
        ],
    )
    def test_card_details(self, harness: Harness, token: str, brand: str, last4: str) -> None:
        card = harness.gateway.card_details(token)
        assert (card.token, card.brand, card.last4) == (token, brand, last4)
        assert (card.exp_month, card.exp_year) == (12, 2034)
        assert card.fingerprint

    def test_find_charge_for_an_unseen_key_is_none(self, harness: Harness) -> None:
        assert harness.gateway.find_charge("never-sent") is None

    def test_lost_answer_is_unknown_and_reconciled_by_find_charge(self, harness: Harness) -> None:
        harness.lose_next_answer()
        lost = harness.gateway.charge(charge_request())
        assert lost.status is ChargeStatus.UNKNOWN
        found = harness.gateway.find_charge("inv_1:attempt_1")
        assert found is not None and found.status is ChargeStatus.SUCCEEDED
        assert (found.amount_minor, found.currency) == (1999, "USD")
        # sending it again with the same key is safe: same PaymentIntent, no new money
        assert harness.gateway.charge(charge_request()) == found
        assert harness.money_moves() == 1

    def test_find_charge_reports_a_decline(self, harness: Harness) -> None:
        harness.gateway.charge(charge_request("pm_card_chargeDeclinedLostCard"))
        found = harness.gateway.find_charge("inv_1:attempt_1")
        assert found is not None and found.status is ChargeStatus.DECLINED
        assert (found.decline_code, found.decline_kind) == ("lost_card", DeclineKind.HARD)

    def test_find_charge_narrowed_by_metadata(self, harness: Harness) -> None:
        harness.gateway.charge(charge_request())
        assert harness.gateway.find_charge("inv_1:attempt_1", metadata={"invoice_id": "inv_1"})
        assert harness.gateway.find_charge("inv_1:attempt_1", metadata={"invoice_id": "x"}) is None

    def test_setup_off_session_returns_the_card(self, harness: Harness) -> None:
        setup = harness.gateway.setup_off_session(
            payment_method_token="pm_card_mastercard",
            gateway_customer_id="cus_test",
            idempotency_key="setup_1",
        )
        assert setup.status == "succeeded"
        assert setup.gateway_setup_id and setup.gateway_setup_id.startswith("seti_")
        assert setup.card and (setup.card.brand, setup.card.last4) == ("mastercard", "4444")

    def test_setup_needing_authentication_requires_action(self, harness: Harness) -> None:
        setup = harness.gateway.setup_off_session(
            payment_method_token="pm_card_authenticationRequiredOnSetup",
            gateway_customer_id="cus_test",
            idempotency_key="setup_1",
        )
        assert setup.status == "requires_action"
        assert setup.card is None and setup.message


class TestFakeGateway(GatewayContract):
    @pytest.fixture
    def harness(self, fake: FakeGateway) -> Harness:
        return Harness(
            gateway=fake,
            lose_next_answer=fake.unknown_next,
            money_moves=lambda: sum(1 for e in fake.ledger if e.kind == "charge"),
        )


class TestStripeGateway(GatewayContract):
    @pytest.fixture
    def harness(self, stripe_gateway: StripeGateway, sim: StripeSim) -> Harness:
        def lose_next_answer() -> None:
            attempts = stripe_gateway.retry.max_attempts
            sim.script(Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * (attempts - 1))

        return Harness(
            gateway=stripe_gateway,
            lose_next_answer=lose_next_answer,
            money_moves=lambda: len(sim.succeeded_intents()),
        )
