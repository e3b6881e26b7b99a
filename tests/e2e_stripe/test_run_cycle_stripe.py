"""`run_cycle` with StripeGateway over the scripted Stripe: exactly one PaymentIntent per
period, through declines, 429 storms and timeouts whose charge went through."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from billing_engine import subscriptions
from billing_engine.cycle import CycleSummary, run_cycle
from billing_engine.db import transaction
from billing_engine.gateway import StripeGateway
from billing_engine.models import Invoice, PaymentAttempt, Subscription
from billing_engine.settings import Settings
from tests.factories import make_card, make_customer, make_plan
from tests.gateway.stripe_sim import Fault, StripeSim

INTENTS = "/v1/payment_intents"


def subscribe(engine: Engine, now: datetime, token: str, *, email: str, start_at: datetime | None = None) -> str:
    with transaction(engine) as s:
        plan = s.exec(select_plan()).first() or make_plan(s, now)
        cust = make_customer(s, now, email=email)
        pm = make_card(s, now, cust, plan, token=token, gateway="stripe")
        return subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=now,
                                    start_at=start_at).id


def select_plan():  # type: ignore[no-untyped-def]
    from billing_engine.models import Plan

    return select(Plan).where(Plan.code == "basic-monthly")


def cycle(engine: Engine, gateway: StripeGateway, settings: Settings, at: datetime) -> CycleSummary:
    summary = run_cycle(engine, gateway, now=at, settings=settings, concurrency=1)  # scripted faults: call order
    assert summary.errors == []
    return summary


def sub(engine: Engine, sub_id: str) -> Subscription:
    with transaction(engine) as s:
        found = s.get(Subscription, sub_id)
        assert found is not None
        return found


def attempts(engine: Engine, sub_id: str) -> list[PaymentAttempt]:
    with transaction(engine) as s:
        return list(s.exec(select(PaymentAttempt).where(PaymentAttempt.subscription_id == sub_id)
                           .order_by(col(PaymentAttempt.created_at), col(PaymentAttempt.attempt_number))))


def keys_of(sim: StripeSim) -> list[str | None]:
    return [r.idempotency_key for r in sim.posts(INTENTS)]


def test_renewals_over_several_periods_make_one_payment_intent_each(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    subs = [subscribe(engine, now, t, email=f"{t}@example.com") for t in
            ("pm_card_visa", "pm_card_mastercard", "pm_card_amex")]
    months = [now, datetime(2026, 2, 15, 9, tzinfo=UTC), datetime(2026, 3, 15, 9, tzinfo=UTC),
              datetime(2026, 4, 15, 9, tzinfo=UTC)]
    for at in months:
        if at != now:  # the renewal's reminder, 7 days ahead (no charge without it)
            assert cycle(engine, stripe_gateway, settings, at - timedelta(days=7)).charged == 0
        summary = cycle(engine, stripe_gateway, settings, at)
        assert (summary.charged, summary.succeeded) == (3, 3)
        assert cycle(engine, stripe_gateway, settings, at).charged == 0  # a rerun charges nothing
    assert len(sim.payment_intents) == 12 == len(sim.succeeded_intents())
    per_invoice = Counter(pi["metadata"]["invoice_id"] for pi in sim.payment_intents.values())
    assert len(per_invoice) == 12 and set(per_invoice.values()) == {1}
    assert len(set(keys_of(sim))) == 12
    with transaction(engine) as s:
        invoices = list(s.exec(select(Invoice)))
        paid_attempts = list(s.exec(select(PaymentAttempt)))
    assert len(invoices) == 12 and {i.status for i in invoices} == {"paid"}
    assert {a.gateway_charge_id for a in paid_attempts} == set(sim.payment_intents)
    for a in paid_attempts:
        pi = sim.payment_intents[a.gateway_charge_id or ""]
        assert pi["metadata"]["idempotency_key"] == a.idempotency_key
        assert (pi["amount"], pi["currency"], pi["status"]) == (1700, "usd", "succeeded")
    for sub_id in subs:
        assert sub(engine, sub_id).current_period_end == datetime(2026, 5, 15, 9, tzinfo=UTC)
    posted = sim.posts(INTENTS)[0].params
    assert (posted["off_session"], posted["confirm"]) == ("true", "true")


def test_a_429_storm_is_retried_with_the_same_key_and_charges_once(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings,
    backoffs: list[float],
) -> None:
    sub_id = subscribe(engine, now, "pm_card_visa", email="a@example.com")
    sim.script(Fault.RATE_LIMIT, Fault.RATE_LIMIT, Fault.RATE_LIMIT)
    summary = cycle(engine, stripe_gateway, settings, now)
    assert (summary.charged, summary.succeeded, summary.unknown) == (1, 1, 0)
    [attempt] = attempts(engine, sub_id)
    assert keys_of(sim) == [attempt.idempotency_key] * 4
    assert len(sim.payment_intents) == 1 and len(backoffs) == 3
    assert sub(engine, sub_id).status == "active"


def test_a_429_storm_longer_than_the_retries_is_charged_once_on_the_next_run(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    sub_id = subscribe(engine, now, "pm_card_visa", email="a@example.com")
    sim.script(*[Fault.RATE_LIMIT] * 4)
    first = cycle(engine, stripe_gateway, settings, now)
    assert (first.charged, first.unknown, len(sim.payment_intents)) == (1, 1, 0)
    [attempt] = attempts(engine, sub_id)
    assert attempt.status == "unknown"
    second = cycle(engine, stripe_gateway, settings, now + timedelta(minutes=10))
    assert (second.charged, second.reconciled, second.succeeded) == (0, 1, 1)
    assert keys_of(sim) == [attempt.idempotency_key] * 5  # 4 refused + the re-send after an empty search
    assert len(sim.payment_intents) == 1
    assert [a.status for a in attempts(engine, sub_id)] == ["succeeded"]


def test_timeout_after_the_charge_went_through_is_reconciled_without_a_second_charge(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    sub_id = subscribe(engine, now, "pm_card_visa", email="a@example.com")
    sim.script(Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * 3)
    first = cycle(engine, stripe_gateway, settings, now)
    assert (first.charged, first.unknown, first.succeeded) == (1, 1, 0)
    [attempt] = attempts(engine, sub_id)
    assert attempt.status == "unknown"
    assert sub(engine, sub_id).status == "incomplete"
    assert len(sim.succeeded_intents()) == 1  # Stripe did charge
    posts_before = len(sim.posts(INTENTS))

    second = cycle(engine, stripe_gateway, settings, now + timedelta(minutes=10))
    assert (second.reconciled, second.succeeded, second.charged) == (1, 1, 0)
    assert len(sim.posts(INTENTS)) == posts_before  # found by search: nothing re-sent
    assert len(sim.payment_intents) == 1
    [settled] = attempts(engine, sub_id)
    assert (settled.status, settled.gateway_charge_id) == ("succeeded", next(iter(sim.payment_intents)))
    assert sub(engine, sub_id).status == "active"


def test_timeout_after_charge_with_a_lagging_search_index_still_charges_once(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    sub_id = subscribe(engine, now, "pm_card_visa", email="a@example.com")
    sim.script(Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * 3)
    cycle(engine, stripe_gateway, settings, now)
    sim.search_lags = True  # search has not indexed the intent: the charge is re-sent with the same key
    second = cycle(engine, stripe_gateway, settings, now + timedelta(minutes=1))
    assert (second.reconciled, second.succeeded) == (1, 1)
    [attempt] = attempts(engine, sub_id)
    assert set(keys_of(sim)) == {attempt.idempotency_key}
    assert len(sim.payment_intents) == 1 and attempt.status == "succeeded"


def test_timeout_then_retry_gets_the_saved_answer_in_the_same_run(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    sub_id = subscribe(engine, now, "pm_card_visa", email="a@example.com")
    sim.script(Fault.TIMEOUT_AFTER_COMMIT)
    summary = cycle(engine, stripe_gateway, settings, now)
    assert (summary.succeeded, summary.unknown) == (1, 0)
    assert len(sim.posts(INTENTS)) == 2 and len(set(keys_of(sim))) == 1
    assert len(sim.payment_intents) == 1
    assert sub(engine, sub_id).status == "active"


def test_soft_decline_is_past_due_with_the_code_and_each_retry_has_its_own_key(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    sub_id = subscribe(engine, now, "pm_card_chargeDeclinedInsufficientFunds", email="a@example.com")
    summary = cycle(engine, stripe_gateway, settings, now)
    assert (summary.declined_soft, summary.canceled_involuntary) == (1, 0)
    s = sub(engine, sub_id)
    assert (s.status, s.next_retry_at) == ("past_due", now + timedelta(days=1))
    [a] = attempts(engine, sub_id)
    assert (a.status, a.decline_code, a.decline_kind) == ("failed", "insufficient_funds", "soft")
    assert a.gateway_charge_id in sim.payment_intents  # the declined PaymentIntent's id
    assert cycle(engine, stripe_gateway, settings, now + timedelta(hours=1)).charged == 0  # not yet due
    cycle(engine, stripe_gateway, settings, now + timedelta(days=1))
    tries = attempts(engine, sub_id)
    assert [t.attempt_number for t in tries] == [1, 2]
    assert keys_of(sim) == [t.idempotency_key for t in tries] and tries[0].idempotency_key != tries[1].idempotency_key


def test_hard_decline_cancels_involuntarily(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    lost = subscribe(engine, now, "pm_card_chargeDeclinedLostCard", email="lost@example.com")
    auth = subscribe(engine, now, "pm_card_authenticationRequired", email="3ds@example.com")
    summary = cycle(engine, stripe_gateway, settings, now)
    assert (summary.declined_hard, summary.canceled_involuntary) == (2, 2)
    for sub_id, code in ((lost, "lost_card"), (auth, "authentication_required")):
        s = sub(engine, sub_id)
        assert (s.status, s.cancellation_kind, s.cancellation_reason) == (
            "canceled", "involuntary", f"hard_decline:{code}")
        [a] = attempts(engine, sub_id)
        assert (a.decline_code, a.decline_kind) == (code, "hard")
    assert cycle(engine, stripe_gateway, settings, now + timedelta(days=40)).charged == 0
    assert len(sim.posts(INTENTS)) == 2


def test_one_run_with_a_storm_a_decline_and_a_lost_answer(
    engine: Engine, now: datetime, sim: StripeSim, stripe_gateway: StripeGateway, settings: Settings
) -> None:
    # processed in order of when they are due: storm, then decline, then the lost answer
    storm = subscribe(engine, now, "pm_card_visa", email="storm@example.com", start_at=now - timedelta(hours=3))
    declined = subscribe(engine, now, "pm_card_chargeDeclinedInsufficientFunds", email="poor@example.com",
                         start_at=now - timedelta(hours=2))
    lost = subscribe(engine, now, "pm_card_mastercard", email="lost@example.com", start_at=now - timedelta(hours=1))
    sim.script(Fault.RATE_LIMIT, Fault.RATE_LIMIT, Fault.PASS,  # storm: 2 x 429, then charged
               Fault.PASS,  # decline
               Fault.TIMEOUT_AFTER_COMMIT, *[Fault.CONNECTION_RESET] * 3)  # charged, answer lost
    first = cycle(engine, stripe_gateway, settings, now)
    assert (first.charged, first.succeeded, first.declined_soft, first.unknown) == (3, 1, 1, 1)
    second = cycle(engine, stripe_gateway, settings, now + timedelta(minutes=5))
    assert (second.charged, second.reconciled, second.succeeded) == (0, 1, 1)
    assert [sub(engine, i).status for i in (storm, declined, lost)] == ["active", "past_due", "active"]
    assert len(sim.payment_intents) == 3 and len(sim.succeeded_intents()) == 2
    by_sub = Counter(pi["metadata"]["subscription_id"] for pi in sim.payment_intents.values())
    assert by_sub == {storm: 1, declined: 1, lost: 1}
    assert attempts(engine, declined)[0].decline_code == "insufficient_funds"
