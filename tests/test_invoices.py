"""Invoices: one per subscription period, whoever asks for it and how often."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_engine import invoices
from billing_engine.db import transaction
from billing_engine.models import Event, Invoice, Plan
from tests.factories import make_subscription


def test_asking_twice_for_a_period_gives_the_same_invoice(engine: Engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        sub = make_subscription(s, now)
        plan = s.get(Plan, sub.plan_id)
        assert plan is not None
        first = invoices.for_period(s, sub, plan, 0, now=now)
        again = invoices.for_period(s, sub, plan, 0, now=now)
        second = invoices.for_period(s, sub, plan, 1, now=now)
        assert again.id == first.id and second.id != first.id
        assert second.period_start == first.period_end
        assert (first.amount_minor, first.currency, first.status) == (1700, "USD", "open")
    with transaction(engine) as s:  # a later run, another session: still the same invoice
        assert invoices.for_period(s, sub, plan, 0, now=now).id == first.id
    with Session(engine) as s:
        assert len(s.exec(select(Invoice)).all()) == 2
        assert len(s.exec(select(Event).where(Event.type == "invoice.created")).all()) == 2


def test_an_invoice_summary_shows_its_attempts_and_their_idempotency_keys(engine: Engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine import payments
    from billing_engine.models import PaymentMethod

    with transaction(engine) as s:
        sub = make_subscription(s, now)
        plan, pm = s.get(Plan, sub.plan_id), s.get(PaymentMethod, sub.payment_method_id)
        assert plan is not None and pm is not None
        inv = invoices.for_period(s, sub, plan, 0, now=now)
        attempt = payments.start_attempt(s, sub, inv, pm, now=now)
        summary = invoices.summary(inv)
        [shown] = [invoices.attempt_summary(a) for a in invoices.attempts(s, inv.id)]
    assert summary["id"] == inv.id and summary["attempt_count"] == 1 and summary["status"] == "open"
    assert shown["id"] == attempt.id and shown["status"] == "pending"
    assert shown["idempotency_key"] == payments.idempotency_key_for(inv.id, 1)
