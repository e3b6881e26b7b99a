"""Run-cycle throughput and exactly-once check under parallel workers.

    python bench/cycle_bench.py --subscriptions 2000 --workers 4 --latency-ms 20 \
        --database postgresql+psycopg://postgres@127.0.0.1:5432/billing_bench_cycle

Creates (or resets) the database, subscribes N customers through the real services,
then starts W worker *processes* that each run `run_cycle` at the same instant with a
FakeGateway that sleeps `latency` per charge (a stand-in for Stripe's round trip).
Prints wall time, charges per second, and checks that every subscription was charged
exactly once (invoices == attempts == subscriptions, no duplicate idempotency keys).
With --database sqlite:///... the workers serialise on SQLite's write lock.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Benchmarks charge nobody: say so explicitly (an unset gateway is refused on PostgreSQL).
os.environ.setdefault("BILLING_GATEWAY", "fake")

from sqlalchemy import func  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from billing_engine.db import make_engine, transaction, upgrade  # noqa: E402

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def reset_database(url: str) -> None:
    from bench.cycle_data import reset

    reset(url)


def seed(url: str, n: int) -> None:
    from billing_engine import customers, payment_methods, plans, subscriptions
    from billing_engine.consents import ConsentInput
    from billing_engine.gateway.protocol import CardDetails

    engine = make_engine(url)
    upgrade(engine)
    card = CardDetails(token="pm_card_visa", brand="visa", last4="4242", exp_month=12, exp_year=2034)
    with transaction(engine) as s:
        plan = plans.create(s, code="bench", name="Bench", amount_minor=1700, currency="USD", interval="month",
                            now=NOW)
        plan_id = plan.id
    batch = 500
    for start in range(0, n, batch):
        with transaction(engine) as s:
            plan = plans.get(s, plan_id)
            for i in range(start, min(n, start + batch)):
                c = customers.create(s, email=f"c{i}@example.com", now=NOW)
                consent = ConsentInput(accepted_at=NOW, ip_address="203.0.113.1", user_agent="bench",
                                       terms_version="v1", terms_text="terms", amount_minor=1700, currency="USD",
                                       interval="month", channel="import")
                pm, _ = payment_methods.add(s, customer_id=c.id, token="pm_card_visa", gateway="fake", card=card,
                                            consent=consent, now=NOW)
                subscriptions.create(s, customer_id=c.id, plan_id=plan.id, payment_method_id=pm.id, now=NOW)
    engine.dispose()


def worker(url: str, latency: float, batch: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    engine = make_engine(url)
    summary = run_cycle(engine, FakeGateway(latency=latency), now=NOW, settings=load_settings(database_url=url, gateway="fake"),
                        batch_size=batch)
    out.put((summary.succeeded, len(summary.errors)))
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite:///bench-cycle.db")
    ap.add_argument("--subscriptions", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()

    reset_database(args.database)
    t0 = time.perf_counter()
    seed(args.database, args.subscriptions)
    print(f"seeded {args.subscriptions} subscriptions in {time.perf_counter() - t0:.1f}s")

    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=worker, args=(args.database, args.latency_ms / 1000, args.batch, q))
             for _ in range(args.workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    charged = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)

    from billing_engine.models import Invoice, PaymentAttempt

    engine = make_engine(args.database)
    with Session(engine) as s:
        invoices = s.exec(select(func.count()).select_from(Invoice)).one()
        attempts = s.exec(select(func.count()).select_from(PaymentAttempt)).one()
        keys = s.exec(select(func.count(func.distinct(PaymentAttempt.idempotency_key)))).one()
    backend = make_url(args.database).get_backend_name()
    print(f"backend={backend} workers={args.workers} latency={args.latency_ms}ms batch={args.batch}")
    print(f"charged {charged} in {wall:.2f}s = {charged / wall:.0f} charges/s "
          f"(per worker: {[r[0] for r in results]}, errors: {errors})")
    ok = invoices == attempts == keys == charged == args.subscriptions
    print(f"exactly-once check: invoices={invoices} attempts={attempts} distinct keys={keys} -> {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
