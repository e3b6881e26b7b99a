"""Gapless invoice numbers: assigned when the invoice is paid, in the batched settle
(one range per batch) and in the row-by-row path alike; a rolled-back transaction
gives its numbers back; concurrent workers never share or skip one."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_engine import invoice_numbers
from billing_engine.cycle import run_cycle
from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, InvoiceStatus
from billing_engine.settings import Settings, load_settings
from tests.factories import make_plan, make_subscription, remind_ahead


@pytest.fixture
def settings() -> Settings:
    return load_settings(invoice_number_prefix="2026-", cycle_batch_size=4)


def _subscribe(engine: Engine, now: datetime, n: int, *, code: str = "basic-monthly") -> list[str]:
    with transaction(engine) as s:
        plan = make_plan(s, now, code=code)
        return [make_subscription(s, now, plan=plan, email=f"c{i}-{code}@example.com").id for i in range(n)]


def _numbers(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return sorted(n for n in s.exec(select(Invoice.number).where(col(Invoice.number).is_not(None))) if n)


def test_batched_run_numbers_every_paid_invoice_without_gaps(engine: Engine, now: datetime, settings: Settings) -> None:
    _subscribe(engine, now, 10)
    gateway = FakeGateway()
    assert run_cycle(engine, gateway, now=now, settings=settings).succeeded == 10
    assert _numbers(engine) == [f"2026-{i:06d}" for i in range(1, 11)]
    # a month later, declines get no number; the paid ones continue the series
    gateway.fail_next("insufficient_funds", times=3)
    remind_ahead(engine, now + timedelta(days=31, hours=1), settings)  # the renewal's reminder
    summary = run_cycle(engine, gateway, now=now + timedelta(days=31, hours=1), settings=settings)
    assert summary.succeeded == 7 and summary.declined_soft == 3
    assert _numbers(engine) == [f"2026-{i:06d}" for i in range(1, 18)]
    with Session(engine) as s:
        open_ = s.exec(select(Invoice).where(Invoice.status == InvoiceStatus.OPEN)).all()
        assert len(open_) == 3 and all(i.number is None for i in open_)
    # dunning recovers them through the row-by-row path: same series, no gap
    summary = run_cycle(engine, gateway, now=now + timedelta(days=33), settings=settings)
    assert summary.succeeded == 3
    assert _numbers(engine) == [f"2026-{i:06d}" for i in range(1, 21)]


def test_a_rolled_back_transaction_gives_its_numbers_back(engine: Engine) -> None:
    with transaction(engine) as s:
        assert invoice_numbers.take(s, 2, prefix="RB-") == ["RB-000001", "RB-000002"]
    with pytest.raises(RuntimeError), transaction(engine) as s:
        assert invoice_numbers.take(s, 3, prefix="RB-") == ["RB-000003", "RB-000004", "RB-000005"]
        raise RuntimeError("the settle failed")
    with transaction(engine) as s:
        assert invoice_numbers.take_one(s, prefix="RB-") == "RB-000003"
        assert invoice_numbers.take(s, 0, prefix="RB-") == []
        assert invoice_numbers.take_one(s, prefix="OTHER-") == "OTHER-000001"  # one series per prefix


def test_concurrent_workers_share_one_gapless_series(pg_engine: Engine, now: datetime, settings: Settings) -> None:
    engine = pg_engine
    _subscribe(engine, now, 60)
    gateway = FakeGateway()
    results: list[int] = []

    def work() -> None:
        results.append(run_cycle(engine, gateway, now=now, settings=settings, batch_size=5).succeeded)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(results) == 60
    assert _numbers(engine) == [f"2026-{i:06d}" for i in range(1, 61)]


def test_the_row_by_row_settle_numbers_from_the_same_series(engine: Engine, now: datetime) -> None:
    """The path the Stripe webhook and the reconciler use (``payments.settle``)."""
    from billing_engine import invoices, payments
    from billing_engine.gateway.protocol import ChargeResult, ChargeStatus
    from billing_engine.models import PaymentMethod, Plan, Subscription

    with transaction(engine) as s:
        assert invoice_numbers.take(s, 4, prefix="ROW-")[-1] == "ROW-000004"
        sub = make_subscription(s, now)
        plan = s.get(Plan, sub.plan_id)
        pm = s.get(PaymentMethod, sub.payment_method_id)
        assert plan is not None and pm is not None
        invoice = invoices.for_period(s, sub, plan, sub.next_period_index, now=now)
        attempt = payments.start_attempt(s, sub, invoice, pm, now=now)
        attempt_id, sub_id = attempt.id, sub.id
    with transaction(engine) as s:
        from billing_engine.models import PaymentAttempt

        attempt = s.get(PaymentAttempt, attempt_id)
        assert attempt is not None
        outcome = payments.settle(s, attempt, ChargeResult(status=ChargeStatus.SUCCEEDED, gateway_charge_id="ch_1"),
                                  now=now, number_prefix="ROW-")
        assert outcome == payments.Outcome.SUCCEEDED
        again = payments.settle(s, attempt, ChargeResult(status=ChargeStatus.SUCCEEDED), now=now,
                                number_prefix="ROW-")
        assert again == payments.Outcome.ALREADY_SETTLED
    with Session(engine) as s:
        paid = s.exec(select(Invoice).where(Invoice.subscription_id == sub_id)).one()
        assert paid.status == InvoiceStatus.PAID and paid.number == "ROW-000005"
        assert s.get(Subscription, sub_id) is not None
