"""Data generator for run-cycle benchmarks: N customers, each with a consented card and
one subscription, spread over plans (4 plans, 3 currencies, week / month / year) and
anchors, ALL due at one instant (``NOW``). Loaded set-based: ``generate_series`` on
PostgreSQL (about 1 M subscriptions a minute on this machine), executemany on SQLite.

    python bench/cycle_data.py --database URL --subscriptions 100000
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from billing_engine.consents import terms_hash  # noqa: E402
from billing_engine.db import make_engine, upgrade  # noqa: E402

NOW = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
TERMS = "You agree to be charged the plan's price every period until you cancel."
# id, code, amount_minor, currency, interval, weight (per mille); anchors: exactly one period before NOW - jitter
PLANS = [
    ("plan_bench_usd_m", "bench-usd-monthly", 1700, "USD", "month", 550),
    ("plan_bench_eur_m", "bench-eur-monthly", 900, "EUR", "month", 250),
    ("plan_bench_usd_w", "bench-usd-weekly", 500, "USD", "week", 150),
    ("plan_bench_jpy_y", "bench-jpy-yearly", 12000, "JPY", "year", 50),
]
_STEP = {"month": "1 month", "week": "7 days", "year": "1 year"}


def reset(url: str) -> None:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{u.database}{suffix}").unlink(missing_ok=True)
        return
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()


def _plans(c: object) -> None:
    for pid, code, amount, cur, iv, _w in PLANS:
        c.execute(text(  # type: ignore[attr-defined]
            "INSERT INTO plans (id, code, name, amount_minor, currency, interval, interval_count, trial_days, active,"
            " cancel_immediately, created_at) VALUES (:id, :code, :code, :a, :cur, :iv, 1, 0, true, false, :at)"),
            {"id": pid, "code": code, "a": amount, "cur": cur, "iv": iv, "at": NOW - timedelta(days=800)})


def generate_postgres(engine: Engine, n: int) -> None:
    cases, lo = [], 0
    for pid, *_, w in PLANS:
        cases.append(f"WHEN h < {lo + w} THEN '{pid}'")
        lo += w
    plan_case = "CASE " + " ".join(cases) + f" ELSE '{PLANS[0][0]}' END"
    with engine.begin() as c:
        c.execute(text("SET LOCAL synchronous_commit = off"))
        c.execute(text("SET LOCAL session_replication_role = replica"))  # consistent by construction
        c.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        _plans(c)
        c.execute(text(f"""
            CREATE TEMP TABLE gen ON COMMIT DROP AS
            SELECT g, lpad(g::text, 10, '0') AS k, {plan_case} AS plan_id,
                   CAST(:now AS timestamptz) - make_interval(secs => (g % 86400)) AS due_at
            FROM (SELECT g, (g::bigint * 2654435761 % 1000) AS h FROM generate_series(1, :n) g) x
        """), {"n": n, "now": NOW})
        c.execute(text("""INSERT INTO customers (id, email, name, created_at, updated_at)
            SELECT 'cus_' || k, 'c' || g || '@bench.example', 'Customer ' || g, CAST(:t AS timestamptz),
                   CAST(:t AS timestamptz) FROM gen"""),
                  {"t": NOW - timedelta(days=400)})
        c.execute(text("""INSERT INTO payment_methods (id, customer_id, gateway, token, brand, last4, exp_month,
                exp_year, status, created_at)
            SELECT 'pm_' || k, 'cus_' || k, 'fake', 'pm_card_visa', 'visa', '4242', 12, 2034, 'active',
                   CAST(:t AS timestamptz) FROM gen"""), {"t": NOW - timedelta(days=400)})
        c.execute(text("""INSERT INTO consents (id, customer_id, payment_method_id, plan_id, accepted_at, ip_address,
                user_agent, channel, terms_version, terms_sha256, terms_text, amount_minor, currency, interval,
                interval_count, created_at)
            SELECT 'cns_' || k, 'cus_' || k, 'pm_' || k, p.id, CAST(:t AS timestamptz), '203.0.113.1', 'bench',
                   'import', 'v1', :h, NULL, p.amount_minor, p.currency, p.interval, 1, CAST(:t AS timestamptz)
            FROM gen JOIN plans p ON p.id = gen.plan_id"""), {"t": NOW - timedelta(days=400), "h": terms_hash(TERMS)})
        step = "CASE p.interval " + " ".join(f"WHEN '{iv}' THEN interval '{s}'" for iv, s in _STEP.items()) + " END"
        c.execute(text(f"""INSERT INTO subscriptions (id, customer_id, plan_id, payment_method_id, status,
                billing_anchor, current_period_start, current_period_end, next_period_index, cancel_at_period_end,
                failed_attempts, created_at, updated_at, activated_at, mrr_minor, reminded_period_index, reminded_at)
            SELECT 'sub_' || k, 'cus_' || k, p.id, 'pm_' || k, 'active', due_at - {step}, due_at - {step}, due_at,
                   1, false, 0, due_at - {step}, due_at - {step}, due_at - {step}, p.amount_minor,
                   1, due_at - interval '8 days' 
            FROM gen JOIN plans p ON p.id = gen.plan_id"""))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))


def generate_sqlite(engine: Engine, n: int) -> None:
    from sqlalchemy import insert

    from billing_engine.models import Consent, Customer, PaymentMethod, Subscription
    from billing_engine.periods import Interval, boundary

    t0 = NOW - timedelta(days=400)
    h_terms = terms_hash(TERMS)
    with engine.begin() as c:
        _plans(c)
        for start in range(1, n + 1, 20_000):
            cus, pms, cns, subs = [], [], [], []
            for g in range(start, min(n + 1, start + 20_000)):
                k = f"{g:010d}"
                h, lo, plan = g * 2654435761 % 1000, 0, PLANS[0]
                for p in PLANS:
                    if h < lo + p[5]:
                        plan = p
                        break
                    lo += p[5]
                pid, _code, amount, cur, iv, _w = plan
                due = NOW - timedelta(seconds=g % 86400)
                anchor = due - (boundary(due, Interval(iv), 1, 1) - due)
                cus.append({"id": f"cus_{k}", "email": f"c{g}@bench.example", "name": f"Customer {g}", "created_at": t0,
                            "updated_at": t0})
                pms.append({"id": f"pm_{k}", "customer_id": f"cus_{k}", "gateway": "fake", "token": "pm_card_visa",
                            "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "status": "active",
                            "created_at": t0})
                cns.append({"id": f"cns_{k}", "customer_id": f"cus_{k}", "payment_method_id": f"pm_{k}", "plan_id": pid,
                            "accepted_at": t0, "ip_address": "203.0.113.1", "user_agent": "bench", "channel": "import",
                            "terms_version": "v1", "terms_sha256": h_terms, "amount_minor": amount, "currency": cur,
                            "interval": iv, "interval_count": 1, "created_at": t0})
                subs.append({"id": f"sub_{k}", "customer_id": f"cus_{k}", "plan_id": pid, "payment_method_id": f"pm_{k}",
                             "status": "active", "billing_anchor": anchor, "current_period_start": anchor,
                             "current_period_end": due, "next_period_index": 1, "cancel_at_period_end": False,
                             "failed_attempts": 0, "created_at": anchor, "updated_at": anchor, "activated_at": anchor,
                             "mrr_minor": amount, "reminded_period_index": 1,  # reminded a week ahead
                             "reminded_at": due - timedelta(days=8)})
            for model, rows in ((Customer, cus), (PaymentMethod, pms), (Consent, cns), (Subscription, subs)):
                c.execute(insert(model.__table__), rows)  # type: ignore[attr-defined]


def generate(url: str, n: int) -> float:
    """Reset the database at ``url`` and load ``n`` due subscriptions. Returns seconds."""
    t = time.perf_counter()
    reset(url)
    engine = make_engine(url)
    upgrade(engine)
    if engine.dialect.name == "postgresql":
        generate_postgres(engine, n)
    else:
        generate_sqlite(engine, n)
    engine.dispose()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite:///bench-cycle.db")
    ap.add_argument("--subscriptions", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"loaded {args.subscriptions:,} due subscriptions in {generate(args.database, args.subscriptions):.1f}s")


if __name__ == "__main__":
    main()
