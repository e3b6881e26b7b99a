"""Run-cycle scenarios: money moves once per period, declines follow dunning, crashes heal."""

from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, func, select

from billing_engine import cancellations, subscriptions
from billing_engine.cycle import RUN_GC_THRESHOLD, run_cycle
from billing_engine.db import make_engine, transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import ChargeRequest, ChargeResult
from billing_engine.models import (
    AttemptStatus,
    Event,
    Invoice,
    InvoiceStatus,
    Notification,
    PaymentAttempt,
    Subscription,
)
from billing_engine.settings import load_settings
from tests.factories import make_card, make_customer, make_plan, make_subscription

SETTINGS = load_settings()
JAN31 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)


def _sub(engine, now, **kw) -> str:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        return make_subscription(s, now, **kw).id


def _get(engine, sub_id: str) -> Subscription:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


def _invoices(engine, sub_id: str) -> list[Invoice]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(Invoice).where(Invoice.subscription_id == sub_id).order_by(col(Invoice.period_start))))


def _days(engine, gw, start: datetime, days: int, **kw):  # type: ignore[no-untyped-def]
    out = []
    for d in range(days):
        out.append(run_cycle(engine, gw, now=start + timedelta(days=d), settings=SETTINGS, **kw))
    return out


def test_new_subscription_is_charged_once_and_renews_from_the_anchor(engine) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, JAN31)
    gw = FakeGateway()
    _days(engine, gw, JAN31, 100)
    starts = [i.period_start.date().isoformat() for i in _invoices(engine, sub_id)]
    assert starts == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
    assert gw.total_collected("USD") == 4 * 1700
    assert len(gw.ledger) == 4
    sub = _get(engine, sub_id)
    assert sub.status == "active"
    assert sub.current_period_end == datetime(2026, 5, 31, 10, 0, tzinfo=UTC)


def test_rerunning_the_same_instant_charges_nothing_more(engine) -> None:  # type: ignore[no-untyped-def]
    _sub(engine, JAN31)
    gw = FakeGateway()
    first = run_cycle(engine, gw, now=JAN31, settings=SETTINGS)
    second = run_cycle(engine, gw, now=JAN31, settings=SETTINGS)
    assert (first.succeeded, second.succeeded, second.due) == (1, 0, 0)
    assert len(gw.ledger) == 1


def test_late_run_catches_up_every_missed_period_exactly_once(engine) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, JAN31)
    gw = FakeGateway()
    run_cycle(engine, gw, now=JAN31, settings=SETTINGS)
    late = JAN31 + timedelta(days=95)  # cron down 3 months: no reminders went out either
    summary = run_cycle(engine, gw, now=late, settings=SETTINGS)
    assert (summary.succeeded, summary.waiting_for_reminder, summary.reminders_queued) == (0, 1, 1)
    assert gw.total_collected("USD") == 1700  # no charge without a reminder the lead time before
    summary = run_cycle(engine, gw, now=late + timedelta(days=7), settings=SETTINGS)
    assert summary.succeeded == 3  # one reminder covered the three overdue periods
    assert [i.period_start.month for i in _invoices(engine, sub_id)] == [1, 2, 3, 4]
    assert gw.total_collected("USD") == 4 * 1700


def test_trial_end_brings_the_first_charge_and_no_charge_before(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now, trial_days=14)
    gw = FakeGateway()
    _days(engine, gw, now, 14)
    assert gw.ledger == [] and _get(engine, sub_id).status == "trialing"
    run_cycle(engine, gw, now=now + timedelta(days=14), settings=SETTINGS)
    assert len(gw.ledger) == 1
    sub = _get(engine, sub_id)
    assert sub.status == "active" and sub.current_period_start == now + timedelta(days=14)


def test_cancel_during_trial_is_never_charged(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now, trial_days=14)
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), now=now + timedelta(days=2))
    gw = FakeGateway()
    _days(engine, gw, now, 60)
    sub = _get(engine, sub_id)
    assert gw.ledger == []
    assert (sub.status, sub.cancellation_kind, sub.ended_at) == ("canceled", "voluntary", now + timedelta(days=14))


def test_cancel_at_period_end_takes_effect_without_a_charge(engine) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, JAN31)
    gw = FakeGateway()
    run_cycle(engine, gw, now=JAN31, settings=SETTINGS)
    with transaction(engine) as s:
        cancellations.cancel(s, subscriptions.get(s, sub_id), reason="too_expensive", now=JAN31 + timedelta(days=3))
    summary = run_cycle(engine, gw, now=datetime(2026, 3, 1, tzinfo=UTC), settings=SETTINGS)
    sub = _get(engine, sub_id)
    assert len(gw.ledger) == 1
    assert summary.cancellations_effective == 1
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == ("canceled", "voluntary", "too_expensive")
    assert sub.ended_at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)


def test_soft_decline_retries_on_schedule_then_cancels_involuntarily(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now, token="pm_card_chargeDeclinedInsufficientFunds")
    gw = FakeGateway()
    summaries = _days(engine, gw, now, 20)
    with Session(engine) as s:
        attempts = list(s.exec(select(PaymentAttempt).order_by(col(PaymentAttempt.attempt_number))))
    days = [(a.created_at - now).days for a in attempts]
    assert days == [0, 1, 2, 3, 5, 7, 10, 14]  # 8 tries within two weeks
    assert len({a.idempotency_key for a in attempts}) == 8
    sub = _get(engine, sub_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == ("canceled", "involuntary", "payment_failed")
    assert _invoices(engine, sub_id)[0].status == InvoiceStatus.UNCOLLECTIBLE
    assert sum(x.canceled_involuntary for x in summaries) == 1
    assert gw.ledger == []


def test_card_that_recovers_pays_during_dunning(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now, token="pm_fake_recover_after_2")
    gw = FakeGateway()
    _days(engine, gw, now, 5)
    sub = _get(engine, sub_id)
    inv = _invoices(engine, sub_id)[0]
    assert sub.status == "active" and sub.failed_attempts == 0
    assert (inv.status, inv.attempt_count) == ("paid", 3)
    assert gw.total_collected("USD") == 1700


@pytest.mark.parametrize("token,code", [
    ("pm_card_chargeDeclinedLostCard", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "stolen_card"),
    ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
])
def test_hard_decline_cancels_at_once_as_involuntary(sqlite_engine, now, token, code) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(sqlite_engine, now, token=token)
    gw = FakeGateway()
    _days(sqlite_engine, gw, now, 10)
    sub = _get(sqlite_engine, sub_id)
    assert (sub.status, sub.cancellation_kind, sub.cancellation_reason) == ("canceled", "involuntary", f"hard_decline:{code}")
    with Session(sqlite_engine) as s:
        assert s.exec(select(func.count()).select_from(PaymentAttempt)).one() == 1


def test_new_card_during_dunning_is_retried_immediately(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        sub = make_subscription(s, now, plan=plan, token="pm_card_chargeDeclinedInsufficientFunds")
        sub_id = sub.id
    gw = FakeGateway()
    run_cycle(engine, gw, now=now, settings=SETTINGS)
    assert _get(engine, sub_id).status == "past_due"
    later = now + timedelta(hours=5)
    with transaction(engine) as s:
        sub = subscriptions.get(s, sub_id)
        from billing_engine.models import Customer, Plan

        cust = s.get(Customer, sub.customer_id)
        plan = s.get(Plan, sub.plan_id)
        pm = make_card(s, later, cust, plan, token="pm_card_mastercard")  # type: ignore[arg-type]
        subscriptions.change_payment_method(s, sub, pm.id, now=later)
    summary = run_cycle(engine, gw, now=later, settings=SETTINGS)
    assert summary.succeeded == 1
    assert _get(engine, sub_id).status == "active"


def test_no_consent_no_charge(engine, now) -> None:  # type: ignore[no-untyped-def]
    from billing_engine.models import Consent

    sub_id = _sub(engine, now)
    with transaction(engine) as s:
        for c in s.exec(select(Consent)):
            c.revoked_at = now
            s.add(c)
    gw = FakeGateway()
    summary = run_cycle(engine, gw, now=now, settings=SETTINGS)
    assert gw.ledger == []
    assert summary.blocked == 1 and any("consent" in e for e in summary.errors)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(PaymentAttempt)).one() == 0
    assert _get(engine, sub_id).status == "incomplete"


class _CrashAfterCharge:
    """Charges through the fake, then 'crashes' before the answer is recorded."""

    name = "fake"

    def __init__(self, inner: FakeGateway) -> None:
        self.inner = inner

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.inner.charge(request)
        raise SystemExit("worker killed after the gateway call")

    def find_charge(self, key: str, *, metadata=None):  # type: ignore[no-untyped-def]
        return self.inner.find_charge(key, metadata=metadata)


def test_crash_after_charge_then_rerun_charges_exactly_once(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now)
    gw = FakeGateway()
    with pytest.raises(SystemExit):
        run_cycle(engine, _CrashAfterCharge(gw), now=now, settings=SETTINGS)  # type: ignore[arg-type]
    with Session(engine) as s:
        attempt = s.exec(select(PaymentAttempt)).one()
        assert attempt.status == AttemptStatus.PENDING  # committed before the call
    assert len(gw.ledger) == 1
    summary = run_cycle(engine, gw, now=now + timedelta(minutes=5), settings=SETTINGS)
    assert summary.reconciled == 1 and summary.charged == 0
    assert len(gw.ledger) == 1
    assert _get(engine, sub_id).status == "active"
    with Session(engine) as s:
        assert s.exec(select(PaymentAttempt)).one().status == AttemptStatus.SUCCEEDED


def test_lost_answer_is_reconciled_before_anything_new(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now)
    gw = FakeGateway()
    gw.unknown_next(charged=True)
    first = run_cycle(engine, gw, now=now, settings=SETTINGS)
    assert first.unknown == 1 and _get(engine, sub_id).status == "incomplete"
    second = run_cycle(engine, gw, now=now + timedelta(hours=1), settings=SETTINGS)
    assert second.reconciled == 1 and second.succeeded == 1 and second.charged == 0
    assert len(gw.ledger) == 1
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(PaymentAttempt)).one() == 1


def test_answer_that_never_arrived_is_resent_with_the_same_key(engine, now) -> None:  # type: ignore[no-untyped-def]
    _sub(engine, now)
    gw = FakeGateway()
    gw.unknown_next(charged=False)
    run_cycle(engine, gw, now=now, settings=SETTINGS)
    assert gw.ledger == []
    run_cycle(engine, gw, now=now + timedelta(hours=1), settings=SETTINGS)
    assert len(gw.ledger) == 1
    with Session(engine) as s:
        attempt = s.exec(select(PaymentAttempt)).one()
    assert gw.ledger[0].idempotency_key == attempt.idempotency_key


def test_parallel_workers_charge_each_period_once(engine, now) -> None:  # type: ignore[no-untyped-def]
    with transaction(engine) as s:
        plan = make_plan(s, now)
        for i in range(30):
            cust = make_customer(s, now, email=f"c{i}@example.com")
            pm = make_card(s, now, cust, plan)
            subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=now)
    gw = FakeGateway(latency=0.002)
    url = engine.url.render_as_string(hide_password=False)
    errors: list[str] = []
    # Every worker runs each instant together, as workers started by the same clock do. Without
    # this, a fast worker ran months ahead of a slow one: it sent a subscription's reminder at a
    # business time after the slow worker's charge instant, which then (rightly) waited for it,
    # and the test ended before any run at a later instant charged it (85 of 90, once in CI).
    together = threading.Barrier(4)

    def worker() -> None:
        eng = make_engine(url)
        try:
            for step in range(3):
                together.wait(timeout=120)
                summary = run_cycle(eng, gw, now=now + timedelta(days=31 * step), settings=SETTINGS, batch_size=5)
                errors.extend(summary.errors)
                # the next renewal's reminder (7 days ahead): nothing due, reminders queued
                together.wait(timeout=120)
                summary = run_cycle(eng, gw, now=now + timedelta(days=31 * step + 24), settings=SETTINGS, batch_size=5)
                errors.extend(summary.errors)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        invoices = s.exec(select(func.count()).select_from(Invoice)).one()
        attempts = s.exec(select(func.count()).select_from(PaymentAttempt)).one()
    assert invoices == attempts == len(gw.ledger) == 90  # 30 subs x 3 periods, no duplicates
    assert gw.total_collected("USD") == 90 * 1700


def test_dry_run_lists_due_work_and_changes_nothing(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now)
    gw = FakeGateway()
    summary = run_cycle(engine, gw, now=now, settings=SETTINGS, dry_run=True)
    assert [w["subscription_id"] for w in summary.would_charge] == [sub_id]
    assert summary.would_charge[0]["amount"] == "17.00"
    assert gw.ledger == []
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Invoice)).one() == 0
        assert s.exec(select(func.count()).select_from(Event).where(Event.type == "invoice.created")).one() == 0


def test_every_state_change_writes_an_event_and_queues_a_receipt(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now)
    run_cycle(engine, FakeGateway(), now=now, settings=SETTINGS)
    with Session(engine) as s:
        types = [e.type for e in s.exec(select(Event).where(Event.subscription_id == sub_id).order_by(col(Event.id)))]
        kinds = [n.kind for n in s.exec(select(Notification).where(Notification.subscription_id == sub_id))]
    # one event per state change: the invoice was paid, the subscription became active
    assert types == ["subscription.created", "invoice.paid", "subscription.activated"]
    assert kinds.count("receipt") == 1


def test_renewal_reminder_is_queued_once_before_each_charge(engine, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(engine, now)
    gw = FakeGateway()
    _days(engine, gw, now, 70)
    with Session(engine) as s:
        reminders = list(s.exec(select(Notification).where(
            Notification.subscription_id == sub_id, Notification.kind == "renewal_reminder")))
    # renewals on Feb 15 and Mar 15: one reminder each, 7 days ahead
    assert sorted(r.next_attempt_at.date().isoformat() for r in reminders) == ["2026-02-08", "2026-03-08"]


class _SeesTheCollector(FakeGateway):
    def __init__(self) -> None:
        super().__init__()
        self.thresholds: list[tuple[int, int, int]] = []

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.thresholds.append(gc.get_threshold())
        return super().charge(request)


def test_a_run_collects_garbage_less_often_and_gives_the_process_its_thresholds_back(engine, now) -> None:  # type: ignore[no-untyped-def]
    """While a run goes on the collector runs less often (its thresholds raised); after
    it -- a server process calls runs too -- the process has its own thresholds back,
    also when the run fails."""
    before = gc.get_threshold()
    _sub(engine, now)
    gw = _SeesTheCollector()
    summary = run_cycle(engine, gw, now=now + timedelta(days=31), settings=SETTINGS)
    assert summary.succeeded == 1
    assert gw.thresholds == [RUN_GC_THRESHOLD] and RUN_GC_THRESHOLD[0] > before[0]
    assert gc.get_threshold() == before

    class Broken(FakeGateway):
        def charge(self, request: ChargeRequest) -> ChargeResult:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the next period is due
        run_cycle(engine, Broken(), now=now + timedelta(days=62), settings=SETTINGS)
    assert gc.get_threshold() == before
