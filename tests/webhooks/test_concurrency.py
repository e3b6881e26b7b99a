"""Concurrent deliveries: the same event twice at once, and a webhook racing the run-cycle."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from billing_engine import payments, webhooks_stripe
from billing_engine.db import transaction
from billing_engine.gateway import ChargeResult, ChargeStatus
from billing_engine.models import Event, PaymentAttempt

from .stripe_events import body_of, event, intent, pending_attempt, subscribed


def _count(engine: Engine, type_: str) -> int:
    with transaction(engine) as s:
        return len(list(s.exec(select(Event).where(Event.type == type_))))


def test_the_same_event_delivered_twice_at_once_is_applied_once(engine: Engine, now: datetime) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    e = event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Twice"))
    inserted = threading.Event()
    receipts: list[webhooks_stripe.Receipt] = []

    def first() -> None:
        with transaction(engine) as s:
            receipts.append(webhooks_stripe.receive(s, e, payload=body_of(e), now=now))
            inserted.set()
            time.sleep(0.3)  # still uncommitted while the second delivery arrives

    def second() -> None:
        inserted.wait(5)
        with transaction(engine) as s:
            receipts.append(webhooks_stripe.receive(s, e, payload=body_of(e), now=now))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.duplicate for r in receipts] == [False, True]
    assert _count(engine, "invoice.paid") == 1


def test_a_webhook_and_the_run_cycle_settling_the_same_attempt_apply_it_once(engine: Engine, now: datetime) -> None:
    billed = subscribed(engine, now)
    attempt = pending_attempt(engine, billed.subscription_id, now)
    e = event("payment_intent.succeeded", intent(attempt, intent_id="pi_3Race"))
    read_by_cycle, settled_by_webhook = threading.Event(), threading.Event()
    outcomes: list[object] = []
    sqlite = engine.dialect.name == "sqlite"  # SQLite serialises transactions: no interleaving

    def webhook() -> None:
        read_by_cycle.wait(5)
        with transaction(engine) as s:
            outcomes.append(webhooks_stripe.receive(s, e, payload=body_of(e), now=now).outcome)
            settled_by_webhook.set()
            time.sleep(0.3)  # still uncommitted when the run-cycle settles

    def cycle_answer() -> None:
        with transaction(engine) as s:
            a = s.get(PaymentAttempt, attempt.id)  # PostgreSQL: read before the webhook settled it
            assert a is not None and (sqlite or a.status == "pending")
            read_by_cycle.set()
            settled_by_webhook.wait(5)
            answer = ChargeResult(status=ChargeStatus.SUCCEEDED, gateway_charge_id="pi_3Race", amount_minor=1700,
                                  currency="USD")
            outcomes.append(payments.settle(s, a, answer, now=now))

    if sqlite:
        read_by_cycle.set()
        webhook()
        cycle_answer()
    else:
        threads = [threading.Thread(target=cycle_answer), threading.Thread(target=webhook)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert outcomes[-1] == payments.Outcome.ALREADY_SETTLED
    assert _count(engine, "invoice.paid") == 1
    assert _count(engine, "subscription.activated") == 1
