"""Exactly once under faults: only a definitive answer settles a charge; errors never
become declines; the run stops cleanly on configuration errors, outages, stop requests
and database failures; a charge that lands after the customer cancelled is refunded."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from billing_engine import cancellations, charging, cycle
from billing_engine.cycle import SLOW_CALL_S, WAITED_CALLS, _Lanes, run_cycle
from billing_engine.db import transaction
from billing_engine.errors import DatabaseUnavailable
from billing_engine.gateway import outcomes
from billing_engine.gateway.fake import FakeGateway
from billing_engine.gateway.protocol import (
    ChargeRequest,
    ChargeResult,
    GatewayAuthError,
    GatewayError,
    IdempotencyConflict,
)
from billing_engine.models import (
    AttemptStatus,
    Notification,
    PaymentAttempt,
    Refund,
    Subscription,
)
from billing_engine.settings import load_settings
from tests.factories import make_plan, make_subscription

SETTINGS = load_settings()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _subs(engine: Engine, n: int, *, plan_kw: dict[str, Any] | None = None) -> list[str]:
    with transaction(engine) as s:
        plan = make_plan(s, T0, **(plan_kw or {}))
        return [make_subscription(s, T0, plan=plan, email=f"c{i}@example.com").id for i in range(n)]


def _attempts(engine: Engine) -> list[PaymentAttempt]:
    with Session(engine) as s:
        return list(s.exec(select(PaymentAttempt).order_by(col(PaymentAttempt.created_at))))


def _mail(engine: Engine, kind: str) -> int:
    with Session(engine) as s:
        return len(list(s.exec(select(Notification).where(Notification.kind == kind))))


def _sub(engine: Engine, sub_id: str) -> Subscription:
    with Session(engine) as s:
        sub = s.get(Subscription, sub_id)
        assert sub is not None
        return sub


class _Scripted:
    """Wraps the fake: raises or loses answers as told, charging through the fake."""

    name = "fake"

    def __init__(self, inner: FakeGateway, *, charge_error: Exception | None = None,
                 find_error: Exception | None = None, lose_answer: bool = False) -> None:
        self.inner, self.charge_error, self.find_error, self.lose_answer = inner, charge_error, find_error, lose_answer
        self.charge_calls = 0

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.charge_calls += 1
        if self.charge_error is not None:
            raise self.charge_error
        result = self.inner.charge(request)
        if self.lose_answer:
            return outcomes.unknown(amount_minor=request.amount_minor, currency=request.currency, message="timeout")
        return result

    def find_charge(self, key: str, *, metadata: dict[str, str] | None = None) -> ChargeResult | None:
        if self.find_error is not None:
            raise self.find_error
        return self.inner.find_charge(key, metadata=metadata)


@pytest.mark.parametrize("error", [
    GatewayAuthError("401: expired API key"), GatewayError("400: search is not available"),
    IdempotencyConflict("keys reused with different parameters"),
])
def test_an_error_while_reconciling_never_becomes_a_decline_or_a_second_charge(engine: Engine, error: Exception) -> None:
    [sub_id] = _subs(engine, 1)
    fake = FakeGateway()
    first = run_cycle(engine, _Scripted(fake, lose_answer=True), now=T0, settings=SETTINGS)  # type: ignore[arg-type]
    assert first.unknown == 1 and len(fake.ledger) == 1
    # next run: the lookup fails and so does the re-send with the same key
    broken = _Scripted(fake, find_error=error, charge_error=error)
    second = run_cycle(engine, broken, now=T0 + timedelta(days=1), settings=SETTINGS)  # type: ignore[arg-type]
    [attempt] = _attempts(engine)
    assert attempt.status in (AttemptStatus.UNKNOWN, AttemptStatus.PENDING)  # still unresolved
    assert second.declined_soft == 0 and second.unresolved == 1
    assert _sub(engine, sub_id).status == "incomplete"  # no dunning
    assert _mail(engine, "payment_failed") == 0
    # a later dunning-free run with a working gateway settles it from the ledger: one charge
    third = run_cycle(engine, fake, now=T0 + timedelta(days=2), settings=SETTINGS)
    assert third.reconciled == 1 and len(fake.ledger) == 1
    assert [a.status for a in _attempts(engine)] == [AttemptStatus.SUCCEEDED]
    assert _sub(engine, sub_id).status == "active"


def test_a_rejected_api_key_stops_the_run_and_tells_no_customer(engine: Engine) -> None:
    _subs(engine, 6)
    fake = FakeGateway()
    gw = _Scripted(fake, charge_error=GatewayAuthError("401: Invalid API Key provided"))
    summary = run_cycle(engine, gw, now=T0, settings=SETTINGS, batch_size=2, concurrency=1)  # type: ignore[arg-type]
    assert summary.stopped == "gateway_configuration" and summary.exit_code == 78
    assert gw.charge_calls == 1  # stopped at once
    assert fake.ledger == []
    assert all(a.status == AttemptStatus.PENDING for a in _attempts(engine))
    assert _mail(engine, "payment_failed") == 0 and summary.declined_soft == 0
    # the key is fixed: the next run charges every period once
    again = run_cycle(engine, fake, now=T0 + timedelta(minutes=10), settings=SETTINGS)
    assert again.stopped is None and again.succeeded == 6 and len(fake.ledger) == 6


def test_an_unreachable_gateway_trips_the_breaker(engine: Engine) -> None:
    _subs(engine, 30)
    fake = FakeGateway()
    fake.unknown_next(charged=False, times=1000)
    settings = load_settings(gateway_breaker_failures=5)
    summary = run_cycle(engine, fake, now=T0, settings=settings, batch_size=10, concurrency=1)
    assert summary.stopped == "gateway_unreachable" and summary.exit_code == 75
    calls = [c for c in fake.calls if c[0] == "charge"]
    assert len(calls) == 5  # not 30 x the retry budget
    assert fake.ledger == []


def test_claims_of_another_live_worker_are_reported_not_silently_skipped(engine: Engine) -> None:
    ids = _subs(engine, 4)
    from billing_engine import claims

    with transaction(engine) as s:
        got = claims.claim_in(s, now=T0, worker="other-host:1:dead", batch_size=3, lease=timedelta(minutes=5),
                              cursor=claims.Cursor())
    assert len(got) == 3
    summary = run_cycle(engine, FakeGateway(), now=T0, settings=SETTINGS)
    assert summary.succeeded == 1 and summary.held_by_other_workers == 3
    [holder] = claims.holders(engine)
    assert (holder.worker, holder.subscriptions, holder.live) == ("other-host:1:dead", 3, True)
    assert claims.release_all(engine, worker="other-host:1:dead") == 3
    later = run_cycle(engine, FakeGateway(), now=T0, settings=SETTINGS)
    assert later.succeeded == 3 and later.held_by_other_workers == 0
    assert len(ids) == 4


def test_a_stop_request_settles_in_flight_charges_and_releases_every_claim(engine: Engine) -> None:
    _subs(engine, 40)
    fake = FakeGateway(latency=0.05)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    summary = run_cycle(engine, fake, now=T0, settings=SETTINGS, batch_size=5, concurrency=2, stop=stop)
    assert summary.stopped == "stop_requested" and summary.exit_code == 143
    assert 0 < summary.succeeded < 40
    attempts = _attempts(engine)
    assert all(a.status == AttemptStatus.SUCCEEDED for a in attempts)  # nothing charged is left pending
    assert len(attempts) == len(fake.ledger) == summary.succeeded
    with Session(engine) as s:
        assert s.exec(select(Subscription).where(col(Subscription.lease_owner).is_not(None))).first() is None


def test_a_database_failure_while_settling_ends_the_run_and_loses_nothing(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    [sub_id] = _subs(engine, 1)
    fake = FakeGateway()
    real = charging.settle

    def broken(*a: Any, **kw: Any) -> Any:
        raise OperationalError("UPDATE ...", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(charging, "settle", broken)
    with pytest.raises(DatabaseUnavailable) as err:
        run_cycle(engine, fake, now=T0, settings=SETTINGS)
    assert err.value.exit_code == 70
    assert [a.status for a in _attempts(engine)] == [AttemptStatus.PENDING] and len(fake.ledger) == 1
    monkeypatch.setattr(charging, "settle", real)
    again = run_cycle(engine, fake, now=T0, settings=SETTINGS)
    assert again.reconciled == 1 and len(fake.ledger) == 1
    assert _sub(engine, sub_id).status == "active"


class _CancelDuringCharge:
    """Charges through the fake only after the customer's cancel has committed."""

    name = "fake"

    def __init__(self, inner: FakeGateway, engine: Engine, sub_id: str, *, at_period_end: bool, when: datetime) -> None:
        self.inner, self.engine, self.sub_id, self.at_period_end, self.when = inner, engine, sub_id, at_period_end, when

    def charge(self, request: ChargeRequest) -> ChargeResult:
        with transaction(self.engine) as s:  # the customer clicks "cancel" now
            sub = s.get(Subscription, self.sub_id)
            assert sub is not None
            cancellations.cancel(s, sub, at_period_end=self.at_period_end, now=self.when)
        return self.inner.charge(request)

    def find_charge(self, key: str, *, metadata: dict[str, str] | None = None) -> ChargeResult | None:
        return self.inner.find_charge(key, metadata=metadata)

    def refund(self, request: Any) -> Any:
        return self.inner.refund(request)


def test_an_immediate_cancel_during_the_first_charge_is_refunded(engine: Engine) -> None:
    [sub_id] = _subs(engine, 1)
    fake = FakeGateway()
    gw = _CancelDuringCharge(fake, engine, sub_id, at_period_end=False, when=T0)
    summary = run_cycle(engine, gw, now=T0, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.refunded_after_cancel == 1 and summary.succeeded == 0
    assert fake.total_collected("USD") == 1700 and fake.net_collected("USD") == 0  # the money went back
    with Session(engine) as s:
        [refund] = s.exec(select(Refund)).all()
        assert refund.status == "succeeded" and refund.amount_minor == 1700
    assert _mail(engine, "refund") == 1 and _mail(engine, "receipt") == 0
    assert _sub(engine, sub_id).status == "canceled"


def test_a_cancel_at_period_end_during_the_renewal_ends_when_promised_and_refunds(engine: Engine) -> None:
    [sub_id] = _subs(engine, 1)
    fake = FakeGateway()
    run_cycle(engine, fake, now=T0, settings=SETTINGS)  # first period paid: Mar 1 - Apr 1
    renewal = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    run_cycle(engine, fake, now=renewal - timedelta(days=7), settings=SETTINGS)  # the renewal's reminder
    gw = _CancelDuringCharge(fake, engine, sub_id, at_period_end=True, when=renewal - timedelta(seconds=1))
    summary = run_cycle(engine, gw, now=renewal, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.refunded_after_cancel == 1
    sub = _sub(engine, sub_id)
    assert sub.status == "canceled" and sub.ended_at == renewal  # the end the page promised
    assert sub.cancellation_kind == "voluntary"
    assert fake.total_collected("USD") == 2 * 1700 and fake.net_collected("USD") == 1700
    assert _mail(engine, "refund") == 1


def test_a_live_worker_keeps_its_claims_past_the_lease_by_heartbeat(engine: Engine) -> None:
    from billing_engine import claims

    _subs(engine, 6)
    fake = FakeGateway(latency=0.4)  # one batch of 6 calls, one at a time: ~2.4 s, the lease is 0.6 s
    done = threading.Event()
    result: list[Any] = []

    def run() -> None:
        result.append(run_cycle(engine, fake, now=T0, settings=SETTINGS, lease=timedelta(seconds=0.6),
                                concurrency=1, batch_size=6))
        done.set()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)  # well past the lease
    with transaction(engine) as s:
        stolen = claims.claim_in(s, now=T0, worker="other-worker", batch_size=10, lease=timedelta(seconds=30),
                                 cursor=claims.Cursor())
    t.join(30)
    assert stolen == []  # the heartbeat kept them
    assert result[0].succeeded == 6 and len(fake.ledger) == 6


class _Counting(FakeGateway):
    """Counts the charges in flight at once and those sent before the first answer came
    back; each takes ``latency`` seconds (the fake's own latency sleeps before its lock,
    like a network round trip)."""

    def __init__(self, latency: float) -> None:
        super().__init__(latency=latency)
        self._count_lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.before_first_answer = 0
        self.answered = False
        self.threads: set[int] = set()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        with self._count_lock:
            self.threads.add(threading.get_ident())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.before_first_answer += not self.answered
        try:
            return super().charge(request)
        finally:
            with self._count_lock:
                self.in_flight -= 1
                self.answered = True


@pytest.mark.parametrize(("latency", "fewest", "most", "threads"), [(0.0, 1, 1, 1), (0.01, 8, 16, 17), (0.5, 12, 16, 17)])
def test_calls_in_flight_grow_to_the_concurrency_when_the_gateway_is_slow(
        engine: Engine, latency: float, fewest: int, most: int, threads: int) -> None:
    """A gateway that answers at once is called from the run's own thread, one call
    after the other (threads would only hand the interpreter lock around); a gateway
    that makes calls wait -- 10 ms away, or 500 ms -- gets the whole concurrency, and
    never more, from its first calls (the 500 ms one while its first call is still out:
    the lanes' watchdog), not one round trip later; every renewal is charged once."""
    ids = _subs(engine, 40)
    gw = _Counting(latency)
    summary = run_cycle(engine, gw, now=T0, settings=SETTINGS, batch_size=20, concurrency=16)
    assert summary.succeeded == 40 and len(gw.ledger) == 40
    assert sorted(e.metadata["subscription_id"] for e in gw.ledger) == sorted(ids)
    assert fewest <= gw.most_in_flight <= most
    assert len(gw.threads) <= threads  # 16 lanes (pool threads) + the run's own thread
    if not latency:
        assert gw.threads == {threading.get_ident()}
    if latency >= SLOW_CALL_S:
        assert gw.before_first_answer >= fewest  # sent during the first round trip


class _Clocks:
    """Scripted clocks for ``_Lanes``: the wall clock, the calling thread's CPU clock and
    the process's CPU clock (every thread), moved by hand between a call's start and end."""

    def __init__(self) -> None:
        self.wall = self.thread = self.process = 0.0

    def perf_counter(self) -> float:
        return self.wall

    def thread_time(self) -> float:
        return self.thread

    def process_time(self) -> float:
        return self.process

    def call(self, lanes: _Lanes, *, wall: float, cpu: float, others: float) -> None:
        lanes.calling()
        self.wall, self.thread, self.process = self.wall + wall, self.thread + cpu, self.process + cpu + others
        lanes.called()


@pytest.mark.parametrize(("wall", "cpu", "others", "opens"), [
    (0.005, 0.00005, 0.0045, False),  # waited for the interpreter lock: another thread was on the CPU
    (0.005, 0.00005, 0.0, True),  # waited, and nothing else in the process ran: the gateway
    (0.012, 0.00005, 0.012, True),  # longer than two switch intervals: not the lock, whatever else ran
    (0.005, 0.004, 0.0, False),  # on the CPU most of the time: slow code, not waiting
    (0.001, 0.00005, 0.0, False),  # quick
])
def test_the_lanes_open_on_calls_that_waited_on_the_gateway_not_on_the_interpreter_lock(
        monkeypatch: pytest.MonkeyPatch, wall: float, cpu: float, others: float, opens: bool) -> None:
    """A quick in-process gateway call that lets go of the interpreter lock (the durable
    fake's SQLite read) while the run's settling thread is busy in Python waits a switch
    interval (5 ms) for the lock, off the CPU, like a call to a gateway a few ms away.
    Such calls opened the lanes for the rest of a run in ~1 of 5 benchmark runs (~40 %
    more CPU per renewal in thread switches); they now prove nothing either way."""
    clocks = _Clocks()
    monkeypatch.setattr(cycle, "time", clocks)
    lanes = _Lanes(16)
    for _ in range(WAITED_CALLS + 2):
        clocks.call(lanes, wall=wall, cpu=cpu, others=others)
    assert lanes.now == (16 if opens else 0)


def test_a_call_explained_by_the_interpreter_lock_does_not_break_a_row_of_waited_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = _Clocks()
    monkeypatch.setattr(cycle, "time", clocks)
    lanes = _Lanes(16)
    for i in range(WAITED_CALLS):
        clocks.call(lanes, wall=0.005, cpu=0.00005, others=0.0)
        if i == 0:
            clocks.call(lanes, wall=0.005, cpu=0.00005, others=0.0045)
    assert lanes.now == 16
    lanes = _Lanes(16)
    for i in range(WAITED_CALLS):
        clocks.call(lanes, wall=0.005, cpu=0.00005, others=0.0)
        if i == 0:
            clocks.call(lanes, wall=0.0001, cpu=0.0001, others=0.0)  # a quick call does
    assert lanes.now == 0


class _CannotRecord(FakeGateway):
    """A durable fake whose ledger cannot commit a block of calls made together (disk
    full): it answered each call, but none of them happened."""

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        with super().together():
            yield
            raise OSError("database or disk is full")


def test_answers_the_gateway_could_not_record_settle_nothing_and_the_next_run_charges_once(
        engine: Engine, tmp_path: Path) -> None:
    """The run's own thread calls a quick gateway inside ``together()``; if the gateway
    then fails to record those calls, their answers are not settled -- the attempts stay
    pending -- and the next run reconciles and charges each renewal exactly once."""
    ledger = str(tmp_path / "ledger.db")
    ids = _subs(engine, 3)
    first = run_cycle(engine, _CannotRecord(ledger_path=ledger), now=T0, settings=SETTINGS)
    assert (first.succeeded, first.unresolved) == (0, 3)
    assert [a.status for a in _attempts(engine)] == [AttemptStatus.PENDING] * 3
    assert FakeGateway(ledger_path=ledger).ledger == []
    again = run_cycle(engine, FakeGateway(ledger_path=ledger), now=T0, settings=SETTINGS)
    assert again.succeeded == 3
    charged = [e.metadata["subscription_id"] for e in FakeGateway(ledger_path=ledger).ledger if e.kind == "charge"]
    assert sorted(charged) == sorted(ids)  # each once
    assert [a.status for a in _attempts(engine)] == [AttemptStatus.SUCCEEDED] * 3
