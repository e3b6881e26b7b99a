"""payment_intent.succeeded / payment_failed: settle what we were waiting for, in any order."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine import payments
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway import ChargeResult, ChargeStatus, FakeGateway
from billing_engine.models import Event, Invoice, PaymentAttempt, Subscription
from billing_engine.settings import load_settings

from .conftest import Post
from .stripe_events import counts, event, get, intent, pending_attempt, subscribed


def _events(engine: Engine, type_: str) -> list[Event]:
    with transaction(engine) as s:
        return list(s.exec(select(Event).where(Event.type == type_)))


def test_payment_failed_soft_decline_makes_the_subscription_past_due(engine: Engine, now: datetime,
                                                                     post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    pi = intent(attempt, status="requires_payment_method", decline_code="insufficient_funds",
                intent_id="pi_3Declined")
    r = post(event("payment_intent.payment_failed", pi))
    assert r.json()["outcome"] == f"settled attempt {attempt.id}: declined_soft"
    a = get(engine, PaymentAttempt, attempt.id)
    assert (a.status, a.decline_code, a.decline_kind, a.gateway_charge_id) == (
        "failed", "insufficient_funds", "soft", "pi_3Declined")
    sub = get(engine, Subscription, billed.subscription_id)
    assert sub.status == "past_due" and sub.next_retry_at == now + timedelta(days=1)


def test_payment_failed_hard_decline_cancels_involuntarily(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    pi = intent(attempt, status="requires_payment_method", decline_code="stolen_card")
    assert post(event("payment_intent.payment_failed", pi)).json()["outcome"].endswith("declined_hard")
    sub = get(engine, Subscription, billed.subscription_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == (
        "canceled", "involuntary", "hard_decline:stolen_card")


def test_an_unknown_attempt_is_reconciled_by_the_webhook(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    with transaction(engine) as s:  # the run-cycle's call timed out
        a = s.get(PaymentAttempt, attempt.id)
        assert a is not None
        payments.settle(s, a, ChargeResult(status=ChargeStatus.UNKNOWN, message="timeout"), now=now)
    post(event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Late")))
    assert get(engine, PaymentAttempt, attempt.id).status == "succeeded"
    assert get(engine, Subscription, billed.subscription_id).status == "active"
    # the next run-cycle has nothing left to reconcile and charges nothing
    gateway = FakeGateway()
    summary = run_cycle(engine, gateway, now=now, settings=load_settings(database_url=str(engine.url)))
    assert (summary.charged, summary.reconciled, gateway.ledger) == (0, 0, [])


def test_webhook_first_then_the_cycles_own_answer_applies_once(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    post(event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Race")))
    before = counts(engine)
    with transaction(engine) as s:  # the gateway's answer reaches the run-cycle afterwards
        a = s.get(PaymentAttempt, attempt.id)
        assert a is not None
        answer = ChargeResult(status=ChargeStatus.SUCCEEDED, gateway_charge_id="pi_3Race", amount_minor=1700,
                              currency="USD")
        assert payments.settle(s, a, answer, now=now) == payments.Outcome.ALREADY_SETTLED
    assert counts(engine) == before
    assert len(_events(engine, "invoice.paid")) == 1


def test_an_event_for_an_attempt_already_settled_changes_nothing(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    run_cycle(engine, FakeGateway(), now=now, settings=load_settings(database_url=str(engine.url)))
    with transaction(engine) as s:
        attempt = s.exec(select(PaymentAttempt).where(PaymentAttempt.subscription_id == billed.subscription_id)).one()
    assert attempt.status == "succeeded"
    before = counts(engine)
    r = post(event("payment_intent.succeeded", intent(attempt)))
    assert r.json()["outcome"] == f"already settled: attempt {attempt.id} is succeeded"
    conflicting = post(event("payment_intent.payment_failed",
                             intent(attempt, status="requires_payment_method", decline_code="generic_decline")))
    assert "needs review" in conflicting.json()["outcome"]
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 2}
    assert get(engine, PaymentAttempt, attempt.id).status == "succeeded"


def test_an_intent_we_never_made_is_recorded_and_ignored(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    before = counts(engine)
    foreign = intent(attempt, intent_id="pi_3Foreign", metadata={"order": "42"})
    r = post(event("payment_intent.succeeded", foreign))
    assert (r.status_code, r.json()["outcome"]) == (200, "ignored: no payment attempt of ours for pi_3Foreign")
    # someone else's metadata that names our attempt id but another key is not ours either
    spoofed = intent(attempt, intent_id="pi_3Spoof", metadata={"attempt_id": attempt.id, "idempotency_key": "x"})
    assert post(event("payment_intent.succeeded", spoofed)).json()["outcome"].startswith("ignored")
    assert counts(engine) == before | {"webhook_events": before["webhook_events"] + 2}
    assert get(engine, PaymentAttempt, attempt.id).status == "pending"


def test_an_intent_with_another_amount_is_not_applied(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    pi = intent(attempt)
    pi["amount"] = 1
    assert post(event("payment_intent.succeeded", pi)).json()["outcome"].startswith("ignored")
    assert get(engine, PaymentAttempt, attempt.id).status == "pending"


def test_attempt_found_by_intent_id_without_metadata(engine: Engine, now: datetime, post: Post) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    with transaction(engine) as s:  # an earlier answer told us the intent id, then the outcome was lost
        a = s.get(PaymentAttempt, attempt.id)
        assert a is not None
        payments.settle(s, a, ChargeResult(status=ChargeStatus.UNKNOWN, gateway_charge_id="pi_3Known",
                                           message="processing"), now=now)
    post(event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Known", metadata={})))
    assert get(engine, PaymentAttempt, attempt.id).status == "succeeded"
    with transaction(engine) as s:
        inv = s.get(Invoice, attempt.invoice_id)
        assert inv is not None and inv.status == "paid"
        payload = json.loads(s.exec(select(Event).where(Event.type == "invoice.paid")).one().payload)
    assert payload["gateway_charge_id"] == "pi_3Known"
