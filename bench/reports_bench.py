"""Reports benchmark on PostgreSQL: N subscriptions with their invoices, payment attempts
and refunds, generated server-side with INSERT ... SELECT over generate_series, then each
report timed over 12 months (by plan and in total).

    .venv/bin/python bench/reports_bench.py --subscriptions 1000000
    .venv/bin/python bench/reports_bench.py --reuse            # skip generation, time again
    .venv/bin/python bench/reports_bench.py --reuse --fold 25000   # a real run-cycle renewing 25,000
                                                               # subscriptions, then the report refresh

It creates (drops first, unless --reuse) the database given by --database (default
billing_bench) on the server of --url, migrates it with billing_engine.db.upgrade, and
never touches any other database. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Benchmarks charge nobody: say so explicitly (an unset gateway is refused on PostgreSQL).
os.environ.setdefault("BILLING_GATEWAY", "fake")

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from billing_engine.db import current_revision, head_revision, make_engine, upgrade  # noqa: E402
from billing_engine.periods import Interval, monthly_amount  # noqa: E402
from billing_engine.reports import REPORTS, build_query, run_report  # noqa: E402

START = "2024-01-01"  # subscriptions start between START and END
END = "2026-01-01"
REPORT_FROM, REPORT_TO = "2025-01-01", "2025-12-31"
TARGET_S = 2.0  # issue 17: every report, 12 months by plan, at 1 M subscriptions

PLANS = [
    # id, code, amount, currency, interval, count, tier, weight (per mille)
    ("plan_basic_m", "basic-monthly", 1700, "USD", "month", 1, "small", 450),
    ("plan_pro_m", "pro-monthly", 4900, "USD", "month", 1, "medium", 200),
    ("plan_pro_y", "pro-yearly", 49900, "USD", "year", 1, "large", 100),
    ("plan_team_q", "team-quarterly", 12900, "USD", "month", 3, "large", 50),
    ("plan_weekly", "weekly", 499, "USD", "week", 1, "small", 60),
    ("plan_daily", "daily", 99, "USD", "day", 1, None, 2),
    ("plan_eur_m", "eur-monthly", 1500, "EUR", "month", 1, "small", 88),
    ("plan_jpy_m", "jpy-monthly", 1800, "JPY", "month", 1, "medium", 50),
]


def step(msg: str, t0: float) -> float:
    now = time.perf_counter()
    print(f"  {msg:<44} {now - t0:8.1f} s", flush=True)
    return now


def generate(engine: Engine, n: int) -> None:
    t = time.perf_counter()
    cases, lo = [], 0
    for pid, *_, w in PLANS:
        cases.append(f"WHEN h < {lo + w} THEN '{pid}'")
        lo += w
    plan_case = "CASE " + " ".join(cases) + f" ELSE '{PLANS[0][0]}' END"
    customers = max(1, int(n * 0.9))  # ~10% of customers have two subscriptions (some come back)
    with engine.begin() as c:
        c.execute(text("SET LOCAL synchronous_commit = off"))
        # bulk load: rows are consistent by construction, so skip the per-row FK triggers
        c.execute(text("SET LOCAL session_replication_role = replica"))
        c.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        c.execute(text("SET LOCAL work_mem = '256MB'"))
        c.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        c.execute(text("SELECT setseed(0.42)"))
        for pid, code, amount, cur, iv, cnt, tier, _ in PLANS:
            c.execute(text(
                "INSERT INTO plans (id, code, name, amount_minor, currency, interval, interval_count, trial_days,"
                " active, cancel_immediately, tier, created_at) VALUES (:id, :code, :code, :a, :cur, :iv, :cnt, 0,"
                " true, false, :tier, :at)"),
                {"id": pid, "code": code, "a": amount, "cur": cur, "iv": iv, "cnt": cnt, "tier": tier,
                 "at": datetime(2023, 12, 1, tzinfo=UTC)})
        c.execute(text(
            "INSERT INTO customers (id, email, name, created_at, updated_at) SELECT 'cus_' || lpad(g::text, 10, '0'),"
            " 'c' || g || '@bench.example', 'Customer ' || g, CAST(:s AS timestamptz), CAST(:s AS timestamptz)"
            " FROM generate_series(1, :c) g"),
            {"s": START, "c": customers})
        t = step(f"customers ({customers:,})", t)
        c.execute(text(f"""
            CREATE TEMP TABLE gen ON COMMIT DROP AS
            SELECT g,
                   'sub_' || lpad(g::text, 10, '0') AS id,
                   'cus_' || lpad((1 + (g::bigint * 7919) % :c)::text, 10, '0') AS customer_id,
                   {plan_case} AS plan_id,
                   created, ended, kind, reason
            FROM (
                SELECT g, (g::bigint * 2654435761 % 1000) AS h,
                       CAST(:s AS timestamptz) + random() * (CAST(:e AS timestamptz) - CAST(:s AS timestamptz)) AS created,
                       random() AS r1, random() AS r2, random() AS r3
                FROM generate_series(1, :n) g
            ) x
            CROSS JOIN LATERAL (SELECT CASE WHEN r1 < 0.35 THEN created + r2 * (CAST(:e AS timestamptz) - created) END AS ended) e
            CROSS JOIN LATERAL (SELECT
                CASE WHEN ended IS NULL THEN NULL WHEN r3 < 0.6 THEN 'voluntary' ELSE 'involuntary' END AS kind,
                CASE WHEN ended IS NULL THEN NULL
                     WHEN r3 < 0.6 THEN (ARRAY['too_expensive','unused','switched_service','other'])[1 + (g % 4)]
                     WHEN r3 < 0.8 THEN 'payment_failed'
                     WHEN r3 < 0.88 THEN 'hard_decline:stolen_card'
                     WHEN r3 < 0.96 THEN 'card_expired'
                     ELSE 'dispute' END AS reason) k
        """), {"s": START, "e": END, "n": n, "c": customers})
        c.execute(text("""
            INSERT INTO subscriptions (id, customer_id, plan_id, status, billing_anchor, current_period_start,
                current_period_end, next_period_index, cancel_at_period_end, canceled_at, ended_at,
                cancellation_kind, cancellation_reason, canceled_by, failed_attempts, created_at, updated_at)
            SELECT id, customer_id, plan_id, CASE WHEN ended IS NULL THEN 'active' ELSE 'canceled' END,
                   created, created, created, 0, false, ended, ended, kind, reason,
                   CASE WHEN ended IS NULL THEN NULL ELSE 'customer' END, 0, created, coalesce(ended, created)
            FROM gen
        """))
        t = step(f"subscriptions ({n:,})", t)
        c.execute(text("""
            CREATE TEMP TABLE inv ON COMMIT DROP AS
            SELECT 'in_' || gen.g || '_' || k AS id, gen.id AS subscription_id, gen.customer_id, gen.plan_id,
                   k AS period_index, ps AS period_start, pe AS period_end, p.amount_minor, p.currency,
                   CASE WHEN gen.kind = 'involuntary' AND pe >= gen.ended THEN 'uncollectible' ELSE 'paid' END
                       AS status,
                   CASE WHEN gen.kind = 'involuntary' AND pe >= gen.ended THEN 4
                        WHEN (gen.g + k) % 20 = 0 THEN 2 + (gen.g % 2) ELSE 1 END AS attempt_count,
                   gen.ended
            FROM gen JOIN plans p ON p.id = gen.plan_id
            CROSS JOIN LATERAL generate_series(0, CASE p.interval WHEN 'day' THEN 740 WHEN 'week' THEN 106
                                                  ELSE 25 END) k
            CROSS JOIN LATERAL (SELECT
                gen.created + make_interval(months => CASE p.interval WHEN 'month' THEN k * p.interval_count
                                                       WHEN 'year' THEN 12 * k * p.interval_count ELSE 0 END,
                                             days => CASE p.interval WHEN 'day' THEN k * p.interval_count
                                                     WHEN 'week' THEN 7 * k * p.interval_count ELSE 0 END) AS ps,
                gen.created + make_interval(months => CASE p.interval WHEN 'month' THEN (k + 1) * p.interval_count
                                                       WHEN 'year' THEN 12 * (k + 1) * p.interval_count ELSE 0 END,
                                             days => CASE p.interval WHEN 'day' THEN (k + 1) * p.interval_count
                                                     WHEN 'week' THEN 7 * (k + 1) * p.interval_count ELSE 0 END)
                    AS pe) b
            WHERE ps < least(coalesce(gen.ended, CAST(:e AS timestamptz)), CAST(:e AS timestamptz))
        """), {"e": END})
        t = step("invoice rows generated", t)
        c.execute(text("""
            INSERT INTO invoices (id, subscription_id, customer_id, plan_id, period_index, period_start, period_end,
                amount_minor, currency, status, attempt_count, amount_paid_minor, amount_refunded_minor,
                created_at, updated_at, paid_at, closed_at)
            SELECT id, subscription_id, customer_id, plan_id, period_index, period_start, period_end, amount_minor,
                   currency, status, attempt_count, CASE WHEN status = 'paid' THEN amount_minor ELSE 0 END, 0,
                   period_start, coalesce(CASE WHEN status = 'paid' THEN period_start + make_interval(hours => 1,
                   days => attempt_count - 1) ELSE ended END, period_start),
                   CASE WHEN status = 'paid' THEN period_start + make_interval(hours => 1, days => attempt_count - 1)
                   END,
                   CASE WHEN status = 'paid' THEN period_start + make_interval(hours => 1, days => attempt_count - 1)
                        ELSE ended END
            FROM inv
        """))
        t = step("invoices inserted", t)
        c.execute(text("""
            INSERT INTO payment_attempts (id, invoice_id, subscription_id, attempt_number, idempotency_key, gateway,
                status, amount_minor, currency, gateway_charge_id, decline_code, decline_kind, created_at,
                completed_at)
            SELECT 'pay_' || substr(i.id, 4) || '_' || a, i.id, i.subscription_id, a,
                   'billing:' || i.id || ':attempt:' || a, 'fake',
                   CASE WHEN i.status = 'paid' AND a = i.attempt_count THEN 'succeeded' ELSE 'failed' END,
                   i.amount_minor, i.currency,
                   CASE WHEN i.status = 'paid' AND a = i.attempt_count THEN 'pi_' || substr(i.id, 4) END,
                   CASE WHEN i.status = 'paid' AND a = i.attempt_count THEN NULL ELSE 'insufficient_funds' END,
                   CASE WHEN i.status = 'paid' AND a = i.attempt_count THEN NULL ELSE 'soft' END,
                   i.period_start + make_interval(hours => 1, days => a - 1),
                   i.period_start + make_interval(hours => 1, days => a - 1)
            FROM inv i CROSS JOIN LATERAL generate_series(1, i.attempt_count) a
        """))
        t = step("payment attempts inserted", t)
        c.execute(text("""
            INSERT INTO refunds (id, invoice_id, payment_attempt_id, amount_minor, currency, status, reason,
                idempotency_key, created_at, succeeded_at)
            SELECT 're_' || substr(i.id, 4), i.id, 'pay_' || substr(i.id, 4) || '_' || i.attempt_count,
                   greatest(1, i.amount_minor / 2), i.currency, 'succeeded', 'requested_by_customer',
                   'refund:' || i.id || '\:1', i.period_start + interval '3 days', i.period_start + interval '3 days'
            FROM inv i WHERE i.status = 'paid' AND hashtext(i.id) % 200 = 0
        """))
        c.execute(text("""
            UPDATE invoices SET amount_refunded_minor = r.amount_minor FROM refunds r WHERE r.invoice_id = invoices.id
        """))
        t = step("refunds inserted", t)
        # the reporting facts the engine keeps on each subscription (payments._invoice_paid):
        # first payment, and the MRR of the last paid period (every invoice here is billed at
        # its plan's price; none is paid after its subscription ended)
        mrr_case = "CASE s.plan_id " + " ".join(
            f"WHEN '{pid}' THEN {monthly_amount(amount, Interval(iv), cnt)}"
            for pid, _, amount, _, iv, cnt, *_ in PLANS) + " END"
        c.execute(text(f"""
            UPDATE subscriptions s SET activated_at = f.first_paid_at, mrr_minor = {mrr_case}
            FROM (SELECT subscription_id, min(paid_at) AS first_paid_at FROM invoices WHERE status = 'paid'
                  GROUP BY subscription_id) f
            WHERE f.subscription_id = s.id
        """))
        t = step("subscriptions.activated_at / mrr_minor", t)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    step("vacuum analyze", t)


# --------------------------------------------------------------------------- the fold after a run-cycle

FOLD_FROM, FOLD_TO = "2025-02-01", "2026-01-31"  # 12 months ending with the month the bench renews in


def normalize_periods(engine: Engine) -> None:
    """Once per database: the generator leaves every subscription's period state at its creation
    (so all of them look due). Set each active one's current period to its last invoice's, its
    reminder sent, so that a run-cycle at ``T`` renews exactly those whose period ended by ``T``
    (no report reads these columns, and no event is written: the rollups are unaffected)."""
    with engine.begin() as c:
        todo = c.execute(text("SELECT count(*) FROM subscriptions WHERE status = 'active' AND next_period_index = 0"))
        if not todo.scalar_one():
            return
        t0 = time.perf_counter()
        c.execute(text("SET LOCAL work_mem = '256MB'"))
        c.execute(text("""
            UPDATE subscriptions s SET current_period_start = l.period_start, current_period_end = l.period_end,
                   next_period_index = l.period_index + 1, reminded_period_index = l.period_index + 1,
                   reminded_at = l.period_end - interval '8 days'
            FROM (SELECT DISTINCT ON (subscription_id) subscription_id, period_index, period_start, period_end
                  FROM invoices ORDER BY subscription_id, period_index DESC) l
            WHERE l.subscription_id = s.id AND s.status = 'active' AND s.next_period_index = 0
        """))
        print(f"periods of the active subscriptions set from their last invoice in {time.perf_counter() - t0:.1f} s")


def prepare_due(engine: Engine, n: int) -> datetime:
    """The instant at which the ``n`` active subscriptions due first are due; each of them gets a
    card and a consent covering its plan (the run-cycle charges only with both)."""
    normalize_periods(engine)
    with engine.begin() as c:
        due = c.execute(text("SELECT current_period_end FROM subscriptions WHERE status = 'active'"
                             " ORDER BY current_period_end OFFSET :k LIMIT 1"), {"k": n - 1}).scalar_one()
        at = {"due": due, "t": datetime(2023, 12, 1, tzinfo=UTC)}
        c.execute(text("""
            INSERT INTO payment_methods (id, customer_id, gateway, token, brand, last4, exp_month, exp_year, status,
                                         created_at)
            SELECT 'pm_' || s.id, s.customer_id, 'fake', 'pm_bench_' || s.id, 'visa', '4242', 12, 2034, 'active', :t
            FROM subscriptions s WHERE s.status = 'active' AND s.current_period_end <= :due
              AND s.payment_method_id IS NULL"""), at)
        c.execute(text("""
            INSERT INTO consents (id, customer_id, payment_method_id, plan_id, accepted_at, ip_address, user_agent,
                                  channel, terms_version, terms_sha256, terms_text, amount_minor, currency, interval,
                                  interval_count, created_at)
            SELECT 'cns_' || s.id, s.customer_id, 'pm_' || s.id, p.id, :t, '203.0.113.1', 'bench', 'import', 'v1',
                   :h, NULL, p.amount_minor, p.currency, p.interval, p.interval_count, :t
            FROM subscriptions s JOIN plans p ON p.id = s.plan_id
            WHERE s.status = 'active' AND s.current_period_end <= :due AND s.payment_method_id IS NULL"""),
                  {**at, "h": "0" * 64})
        c.execute(text("UPDATE subscriptions SET payment_method_id = 'pm_' || id WHERE status = 'active'"
                       " AND current_period_end <= :due AND payment_method_id IS NULL"), at)
        # renewed by an earlier --fold: this period's reminder is out too (no reminder-only wait)
        c.execute(text("UPDATE subscriptions SET reminded_period_index = next_period_index,"
                       " reminded_at = current_period_end - interval '8 days' WHERE status = 'active'"
                       " AND current_period_end <= :due AND (reminded_period_index < next_period_index"
                       " OR reminded_at > current_period_end - interval '8 days')"), at)
    return due.astimezone(UTC) if due.tzinfo else due.replace(tzinfo=UTC)


class Statements:
    """Counts the statements (and rows they report) an engine executes while active, and keeps
    the slowest (``--top``)."""

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy import event

        self.n = 0
        self.rows = 0
        self.on = False
        self.slowest: list[tuple[float, str]] = []
        self._t = 0.0

        def before(*_: object) -> None:
            self._t = time.perf_counter()

        def after(conn: object, cursor: object, statement: str, params: object, context: object,
                  executemany: bool) -> None:
            if self.on:
                self.n += 1
                self.slowest.append((time.perf_counter() - self._t, " ".join(statement.split())[:160]))
                rc = getattr(cursor, "rowcount", -1)
                if statement.lstrip()[:6].upper() in ("INSERT", "DELETE", "UPDATE") and rc and rc > 0:
                    self.rows += rc

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)


def time_reports_after(engine: Engine, label: str, top: int = 0) -> None:
    """The first report after the change (its refresh timed on its own), a second one right
    after (still inside the refresh lag), then a refresh with nothing new."""
    from billing_engine.reports import rollups

    stmts = Statements(engine)
    real = rollups.refresh
    spent: list[float] = []

    def timed(*a: object, **kw: object) -> rollups.Refreshed:
        t = time.perf_counter()
        stmts.on = True
        try:
            return real(*a, **kw)  # type: ignore[arg-type]
        finally:
            stmts.on = False
            spent.append(time.perf_counter() - t)

    rollups.refresh = timed  # type: ignore[assignment]
    try:
        q = build_query(start=FOLD_FROM, end=FOLD_TO, by="plan", now=datetime(2026, 3, 1, tzinfo=UTC))
        for what in ("first report", "second report"):
            spent.clear()
            stmts.n = stmts.rows = 0
            stmts.slowest.clear()
            t0 = time.perf_counter()
            rows = len(run_report(engine, "revenue", q).rows)
            total = time.perf_counter() - t0
            print(f"  {what:<14} (revenue by plan, {FOLD_FROM}..{FOLD_TO}): {total:6.2f} s = refresh "
                  f"{sum(spent):6.2f} s ({stmts.n} statements, {stmts.rows} rows written) + read "
                  f"{total - sum(spent):5.2f} s  ({rows} rows)  {label}  load {os.getloadavg()[0]:.1f}", flush=True)
            for secs, sql in sorted(stmts.slowest, reverse=True)[:top]:
                print(f"      {secs:7.3f} s  {sql}")
    finally:
        rollups.refresh = real  # type: ignore[assignment]


def fold_bench(engine: Engine, url: str, n: int, check: bool, top: int) -> None:
    """A real run-cycle (fake gateway) renewing the ``n`` subscriptions due first, then the reports."""
    os.environ.setdefault("BILLING_ENV", "test")
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.reports import rollups
    from billing_engine.settings import load_settings

    t0 = time.perf_counter()
    rollups.refresh(engine, lag=timedelta(0))  # start from current rollups
    print(f"rollups brought up to date first in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    at = prepare_due(engine, n)
    with engine.connect() as c:
        before = int(c.execute(text("SELECT coalesce(max(id), 0) FROM events")).scalar_one())
    print(f"{n:,} subscriptions due at {at.isoformat()} (cards and consents added in {time.perf_counter() - t0:.1f} s)")
    settings = load_settings(database_url=url, gateway="fake")
    t0 = time.perf_counter()
    summary = run_cycle(engine, FakeGateway(), now=at, settings=settings)
    with engine.connect() as c:
        n_events = int(c.execute(text("SELECT count(*) FROM events WHERE id > :t"), {"t": before}).scalar_one())
    print(f"run-cycle at {at.isoformat()}: {summary.succeeded:,} renewed, {len(summary.errors)} errors, "
          f"{n_events:,} events, {time.perf_counter() - t0:.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    time_reports_after(engine, f"(after renewing {summary.succeeded:,})", top)
    if check:
        t0 = time.perf_counter()
        diff = rollups.differences(engine)
        print(f"rollups.differences: {diff[:5] or 'none'} ({time.perf_counter() - t0:.1f} s)")


def fold_events_bench(engine: Engine, n: int, day: str, top: int) -> None:
    """The events a run-cycle writes for ``n`` invoices paid on ``day`` (invoice.paid, naming the
    invoice, its subscription and customer), inserted as they are, then the reports. Synthetic:
    nothing else changes, so the fold recomputes keys that turn out equal (the earlier measure)."""
    from billing_engine.reports import rollups

    rollups.refresh(engine, lag=timedelta(0))
    with engine.begin() as c:
        got = c.execute(text("""
            INSERT INTO events (type, subscription_id, customer_id, invoice_id, actor, payload, occurred_at, created_at,
                                recorded_at)
            SELECT 'invoice.paid', subscription_id, customer_id, id, 'system', '{}', paid_at, paid_at, now()
            FROM invoices WHERE status = 'paid' AND paid_at >= CAST(:d AS timestamptz)
              AND paid_at < CAST(:d AS timestamptz) + interval '1 day'
            ORDER BY id LIMIT :n"""), {"d": day, "n": n})
        print(f"inserted {got.rowcount:,} invoice.paid events for invoices paid on {day}")
    time_reports_after(engine, f"({got.rowcount:,} invoice.paid events)", top)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as c:
        return {t: int(c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("subscriptions", "invoices", "payment_attempts", "refunds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscriptions", "-n", type=int, default=1_000_000)
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                    help="any database on the server (used to create the bench database)")
    ap.add_argument("--database", default="billing_bench")
    ap.add_argument("--reuse", action="store_true", help="keep the existing data; only time the reports")
    ap.add_argument("--repeat", type=int, default=2, help="runs per report (best and first are printed)")
    ap.add_argument("--reports", default="", help="comma-separated report names (default: every report)")
    ap.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the subscriber query")
    ap.add_argument("--fold", type=int, default=0, metavar="N",
                    help="with --reuse: run a real run-cycle renewing the N subscriptions due first, then time "
                         "the first report after it (its rollup refresh on its own) and a second one")
    ap.add_argument("--fold-events", type=int, default=0, metavar="N",
                    help="with --reuse: insert the invoice.paid events of N invoices paid on --fold-day "
                         "(nothing else changes), then time the reports as --fold does")
    ap.add_argument("--fold-day", default="2025-06-16", help="the day of --fold-events (default 2025-06-16)")
    ap.add_argument("--top", type=int, default=0, metavar="K",
                    help="with --fold / --fold-events: print the K slowest statements of each refresh")
    ap.add_argument("--check", action="store_true",
                    help="after --fold: compare every rollup with a recomputation from the raw tables (slow at 1 M)")
    args = ap.parse_args()
    if (args.fold or args.fold_events) and not args.reuse:
        sys.exit("--fold / --fold-events need --reuse (an existing bench database)")
    if not args.database.replace("_", "").isalnum():
        sys.exit("--database must be a plain identifier")
    url = make_url(args.url)
    if not url.drivername.startswith("postgresql"):
        sys.exit("the benchmark needs PostgreSQL")
    bench_url = url.set(database=args.database).render_as_string(hide_password=False)
    if not args.reuse:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{args.database}"'))
        admin.dispose()
    engine = make_engine(bench_url)
    if args.reuse and current_revision(engine) != head_revision():
        # an older bench database: migrate it (adds and backfills the subscription facts)
        t0 = time.perf_counter()
        before, after = upgrade(engine)
        print(f"migrated {before} -> {after} in {time.perf_counter() - t0:.1f} s")
    if not args.reuse:
        upgrade(engine)
        print(f"generating {args.subscriptions:,} subscriptions into {args.database} ...")
        t0 = time.perf_counter()
        generate(engine, args.subscriptions)
        print(f"generated in {time.perf_counter() - t0:.1f} s")
    if args.fold or args.fold_events:
        if args.fold:
            fold_bench(engine, bench_url, args.fold, args.check, args.top)
        else:
            fold_events_bench(engine, args.fold_events, args.fold_day, args.top)
        engine.dispose()
        return
    print("rows:", ", ".join(f"{k} {v:,}" for k, v in counts(engine).items()))
    from billing_engine.reports import rollups

    t0 = time.perf_counter()
    r = rollups.refresh(engine, rebuild=not args.reuse)
    print(f"report rollups {'built' if r.rebuilt else 'refreshed'} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    rollups.refresh(engine)
    print(f"report rollups refresh with nothing new: {time.perf_counter() - t0:.3f} s")
    now = datetime(2026, 1, 15, tzinfo=UTC)
    print(f"\nreports over {REPORT_FROM} .. {REPORT_TO} (12 months), seconds (first run / best of {args.repeat}):")
    for by in ("plan", None):
        q = build_query(start=REPORT_FROM, end=REPORT_TO, by=by, now=now)
        for name in args.reports.split(",") if args.reports else REPORTS:
            times, rows = [], 0
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                rows = len(run_report(engine, name, q).rows)
                times.append(time.perf_counter() - t0)
            verdict = "< 2 s" if min(times) < TARGET_S else "OVER 2 s"
            print(f"  {name:<9} by={by or '-':<5} {times[0]:7.2f} / {min(times):7.2f}   ({rows} rows)  {verdict}"
                  f"   load {os.getloadavg()[0]:.1f}", flush=True)
    if args.explain:
        from billing_engine.reports.sql import subscriber_event_totals

        plan_mrr = {pid: monthly_amount(amount, Interval(iv), cnt) for pid, _, amount, _, iv, cnt, *_ in PLANS}
        q = build_query(start=REPORT_FROM, end=REPORT_TO, by="plan", now=now)
        stmt = subscriber_event_totals(q, plan_mrr).compile(engine, compile_kwargs={"literal_binds": True})
        with engine.connect() as c:
            for (line,) in c.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + str(stmt))):
                print(line)
    engine.dispose()


if __name__ == "__main__":
    main()
