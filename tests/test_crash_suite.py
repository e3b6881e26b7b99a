"""The crash suite: real `billing run-cycle` processes, SIGKILLed at random instants soon
after they are seen holding claims (committing a batch, at the gateway, between the
gateway call and the settle commit), several at once, over three renewal dates; then one clean run, and an audit against the fake gateway's durable
ledger (a SQLite file outside the engine's database, so a killed process's charges
are still counted).

Checked: every due (subscription, period) charged exactly once in the ledger; every
ledger charge matched by exactly one paid invoice; no attempt left unresolved; money
conserved per currency; no subscription left claimed. The long version (hundreds of
kills, thousands of subscriptions) is bench/chaos_bench.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_engine.db import transaction
from billing_engine.gateway.fake import FakeGateway
from billing_engine.models import Invoice, InvoiceStatus, PaymentAttempt, Subscription
from tests.factories import make_plan, make_subscription

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
DATES = ["2026-01-10T09:00:00Z", "2026-02-10T09:00:00Z", "2026-03-10T09:00:00Z"]
REMINDER_RUNS = {"2026-02-10T09:00:00Z": "2026-02-03T08:30:00Z", "2026-03-10T09:00:00Z": "2026-03-03T08:30:00Z"}
N = 36
LEASE_S = 1.0


def _env(db_url: str, ledger: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        BILLING_ENV="test", BILLING_DATABASE_URL=db_url, BILLING_GATEWAY="fake", BILLING_FAKE_LEDGER=str(ledger),
        BILLING_FAKE_LATENCY_MS="50", BILLING_CLAIM_LEASE_SECONDS=str(LEASE_S), BILLING_CYCLE_BATCH_SIZE="4",
        BILLING_GATEWAY_CONCURRENCY="3", BILLING_MAIL_TRANSPORT="none", PYTHONPATH=str(ROOT),
    )
    return env


def _run(env: dict[str, str], at: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "run-cycle", "--at", at, "--json", "--no-email"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _held_by(engine: Engine, pid: int) -> int:
    """Subscriptions claimed by process ``pid`` (worker ids are ``host:pid:random``)."""
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Subscription).where(
            col(Subscription.lease_owner).like(f"%:{pid}:%"))).one())


def test_killed_workers_never_double_charge_nor_miss_a_period(db_url: str, engine: Engine, tmp_path: Path) -> None:
    rng = random.Random(20261206)
    with transaction(engine) as s:
        plan = make_plan(s, T0)
        ids = [make_subscription(s, T0, plan=plan, email=f"crash{i}@example.com").id for i in range(N)]
    ledger = tmp_path / "gateway-ledger.db"
    env = _env(db_url, ledger)
    kills = kills_holding = 0
    rounds: list[str] = []
    for at in DATES:
        if at in REMINDER_RUNS:  # the renewal's reminder, 7 days ahead (no charge without it)
            subprocess.run([sys.executable, "-m", "cli.main", "run-cycle", "--at", REMINDER_RUNS[at], "--no-email"],
                           env=env, cwd=ROOT, capture_output=True, check=True, timeout=120)
        for _round in range(2):
            procs = [_run(env, at) for _ in range(3)]
            kill_at: dict[int, float] = {}  # up to two of the three: soon after they are seen holding claims
            killed = 0
            deadline = time.monotonic() + 120
            while killed < 2 and any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                for p in procs:
                    if p.poll() is not None or killed >= 2:
                        continue
                    held = _held_by(engine, p.pid)
                    if p.pid not in kill_at and held:  # mid-batch: committing, at the gateway or settling
                        kill_at[p.pid] = time.monotonic() + rng.uniform(0.0, 0.15)
                    if p.pid in kill_at and time.monotonic() >= kill_at[p.pid]:
                        p.send_signal(signal.SIGKILL)
                        p.wait()
                        killed += 1
                        kills_holding += int(held > 0)
                time.sleep(0.01)
            kills += killed
            rounds.append(f"{at} round {_round}: {killed} killed, {len(kill_at)} seen holding claims")
            for p in procs:
                p.wait(timeout=120)
        time.sleep(LEASE_S + 0.3)  # the killed workers' claims lapse
        final = subprocess.run([sys.executable, "-m", "cli.main", "run-cycle", "--at", at, "--json", "--no-email"],
                               env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
    assert kills_holding >= 3, rounds  # the suite really killed workers in the middle of their work

    gw = FakeGateway(ledger_path=str(ledger))
    charges = [e for e in gw.ledger if e.kind == "charge"]
    with Session(engine) as s:
        paid = list(s.exec(select(Invoice).where(Invoice.status == InvoiceStatus.PAID)))
        unresolved = s.exec(select(func.count()).select_from(PaymentAttempt).where(
            col(PaymentAttempt.status).in_(["pending", "unknown"]))).one()
        claimed = s.exec(select(func.count()).select_from(Subscription).where(
            col(Subscription.lease_owner).is_not(None))).one()
        attempts = {a.idempotency_key: a for a in s.exec(select(PaymentAttempt))}
    per_invoice = Counter(e.metadata["invoice_id"] for e in charges)
    assert max(per_invoice.values()) == 1, "an invoice was charged twice"
    assert {i.id for i in paid} == set(per_invoice), "ledger charges and paid invoices differ"
    per_sub = Counter(i.subscription_id for i in paid)
    assert per_sub == Counter({sid: len(DATES) for sid in ids}), "a period was missed or billed twice"
    assert unresolved == 0 and claimed == 0
    assert all(attempts[e.idempotency_key].gateway_charge_id == e.id for e in charges)
    assert gw.total_collected("USD") == sum(i.amount_paid_minor for i in paid) == N * len(DATES) * 1700


def test_sigterm_settles_in_flight_charges_releases_claims_and_exits_143(db_url: str, engine: Engine,
                                                                       tmp_path: Path) -> None:
    with transaction(engine) as s:
        plan = make_plan(s, T0)
        for i in range(40):
            make_subscription(s, T0, plan=plan, email=f"term{i}@example.com")
    ledger = tmp_path / "gateway-ledger.db"
    env = _env(db_url, ledger) | {"BILLING_FAKE_LATENCY_MS": "150", "BILLING_CLAIM_LEASE_SECONDS": "60",
                                  "BILLING_GATEWAY_CONCURRENCY": "2"}
    p = subprocess.Popen([sys.executable, "-m", "cli.main", "run-cycle", "--at", DATES[0], "--no-email"],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ledger.exists() or not FakeGateway(ledger_path=str(ledger)).ledger:  # charging has begun
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=90)
    assert p.returncode == 143, err
    human = [ln for ln in err.strip().splitlines() if not ln.startswith("{")]  # the JSON log lines aside
    assert "stopped" in human[0] and len(human) == 1 and "Traceback" not in err  # one line, no traceback
    charges = [e for e in FakeGateway(ledger_path=str(ledger)).ledger if e.kind == "charge"]
    with Session(engine) as s:
        pending = s.exec(select(func.count()).select_from(PaymentAttempt).where(
            col(PaymentAttempt.status).in_(["pending", "unknown"]))).one()
        claimed = s.exec(select(func.count()).select_from(Subscription).where(
            col(Subscription.lease_owner).is_not(None))).one()
        paid = s.exec(select(func.count()).select_from(Invoice).where(Invoice.status == InvoiceStatus.PAID)).one()
    assert 0 < len(charges) < 40  # it stopped part-way ...
    assert paid == len(charges) and claimed == 0  # ... with every charge settled and every claim released
    assert pending == 0  # in-flight calls finished and were settled
