"""Chaos: SIGKILLs during run-cycle -- the long version of tests/test_crash_suite.py.

    python bench/chaos_bench.py                                   # SQLite, 2,000 subscriptions, >= 100 kills
    python bench/chaos_bench.py --subscriptions 2000 --kills 120 \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/billing_bench_chaos

Creates (or resets) the database and subscribes N customers (monthly plan, a card that
always succeeds; the seeding of bench/cycle_bench.py). Then, for each renewal date (after a clean run a week ahead: the renewal
reminders, without which nothing is charged), keeps
``--workers`` real ``billing run-cycle --at DATE`` processes alive at once and SIGKILLs them:
most (``--armed-share``) shortly after they are seen holding claims (committing a batch's
attempts, at the gateway, settling), the others after a random lifetime (start-up,
connecting, claiming); a process that ends is replaced at once, until this date's share of
``--kills`` is reached. The fake gateway keeps its money
in a durable SQLite ledger outside the engine's database (``BILLING_FAKE_LEDGER``), so a
killed process's charges still count; it sleeps ``--latency-ms`` per call
(``BILLING_FAKE_LATENCY_MS``); claims lapse ``--lease`` seconds after a worker's last
heartbeat (``BILLING_CLAIM_LEASE_SECONDS``). After the kills of a date: wait for the lease
to lapse, then one clean run at that date, which must exit 0.

Audit (against the ledger): invoices charged twice, (subscription, period) paid twice,
missed periods (every subscription must have exactly one paid invoice per date), ledger
charges without a paid invoice and paid invoices without a ledger charge, attempts whose
charge id is not the ledger's, declined attempts (the card never declines), unresolved
attempts (pending / unknown), subscriptions still claimed, money per currency (ledger =
paid invoices = N x dates x price). Prints text and one JSON line; exits 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("BILLING_GATEWAY", "fake")  # benchmarks charge nobody

from cycle_bench import NOW, reset_database, seed  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session, col, func, select  # noqa: E402

from billing_engine import claims  # noqa: E402
from billing_engine.db import make_engine  # noqa: E402
from billing_engine.gateway.fake import FakeGateway  # noqa: E402
from billing_engine.models import Invoice, InvoiceStatus, PaymentAttempt, Refund, Subscription  # noqa: E402

PRICE, CURRENCY = 1700, "USD"  # the seeded plan


def renewal_dates(n: int) -> list[datetime]:
    """NOW (the first charge), then the monthly renewals on the same day and hour."""
    out = []
    for k in range(n):
        y, m = divmod(NOW.month - 1 + k, 12)
        out.append(NOW.replace(year=NOW.year + y, month=m + 1))
    return out


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def worker_env(args: argparse.Namespace, ledger: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        # test mode: no production checks (public signing key, ...) for a bench that charges nobody
        BILLING_ENV="test", BILLING_DATABASE_URL=args.database, BILLING_GATEWAY="fake",
        BILLING_FAKE_LEDGER=str(ledger), BILLING_FAKE_LATENCY_MS=str(args.latency_ms),
        BILLING_CLAIM_LEASE_SECONDS=str(args.lease), BILLING_CYCLE_BATCH_SIZE=str(args.batch),
        BILLING_GATEWAY_CONCURRENCY=str(args.concurrency), BILLING_MAIL_TRANSPORT="none",
        PYTHONPATH=str(ROOT),
    )
    return env


def run_cycle_cmd(at: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "run-cycle", "--at", at, "--json", "--no-email"]


def held_by(engine: Any, pid: int) -> tuple[int, int]:
    """(subscriptions claimed by process ``pid``, their attempts committed but not settled)."""
    owner = col(Subscription.lease_owner).like(f"%:{pid}:%")
    with Session(engine) as s:
        held = int(s.exec(select(func.count()).select_from(Subscription).where(owner)).one())
        pending = int(s.exec(select(func.count()).select_from(PaymentAttempt).join(
            Subscription, col(Subscription.id) == col(PaymentAttempt.subscription_id)).where(
            owner, col(PaymentAttempt.status).in_(["pending", "unknown"]))).one()) if held else 0
    return held, pending


def chaos_at(args: argparse.Namespace, env: dict[str, str], at: datetime, kills_wanted: int,
             rng: random.Random, engine: Any) -> dict[str, int]:
    """Keep ``args.workers`` processes running at ``at`` and SIGKILL them in the middle of work.

    Each process is either *blind* (killed at a random lifetime, ``--min-life`` .. ``--max-life``:
    start-up, connecting, claiming) or, with probability ``--armed-share``, *armed*: watched until
    it holds claims (its batch's attempts are being committed, sent to the gateway or settled),
    then killed ``0 .. --armed-max`` seconds later. Blind lifetimes alone stopped hitting work once
    the pipeline got fast: a whole date's renewals took less than one lifetime. When nothing is
    due any more and no process holds a claim, the date ends even if fewer kills were made (the
    shortfall is reported).
    """
    stats = Counter[str]()
    # (process, kill deadline or None while armed and not yet seen holding claims, armed)
    live: list[list[Any]] = []

    def spawn() -> None:
        p = subprocess.Popen(run_cycle_cmd(iso(at)), env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        armed = rng.random() < args.armed_share
        live.append([p, None if armed else time.monotonic() + rng.uniform(args.min_life, args.max_life), armed])
        stats["started"] += 1
        stats["armed" if armed else "blind"] += 1

    for _ in range(args.workers):
        spawn()
        time.sleep(rng.uniform(0.0, 0.3))
    last_check = 0.0
    while live:
        time.sleep(0.01)
        now = time.monotonic()
        for entry in list(live):
            p, deadline, armed = entry
            rc = p.poll()
            if rc is None and deadline is None and stats["killed"] < kills_wanted:
                if held_by(engine, p.pid)[0] > 0:  # working: kill it somewhere in the next moments
                    entry[1] = deadline = now + rng.uniform(0.0, args.armed_max)
            if rc is None and deadline is not None and now >= deadline and stats["killed"] < kills_wanted:
                due = claims.count_due(engine, at)
                held, in_flight = held_by(engine, p.pid)
                p.send_signal(signal.SIGKILL)
                p.wait()
                stats["killed"] += 1
                stats["killed_armed" if armed else "killed_blind"] += 1
                stats["killed_with_work_due"] += int(due > 0)
                stats["killed_holding_claims"] += int(held > 0)
                stats["attempts_in_flight_at_kills"] += in_flight
                rc = -9
            if rc is None:
                continue
            live.remove(entry)
            if rc >= 0:
                stats[f"exit_{rc}"] += 1
            if stats["killed"] < kills_wanted:
                spawn()
        if stats["killed"] < kills_wanted and now - last_check > 1.0:
            last_check = now
            # all work done: more processes would only start and exit; stop this date
            # (a killed worker's unsettled attempts count as due: unresolved)
            if claims.count_due(engine, at) == 0 and not any(held_by(engine, e[0].pid)[0] for e in live):
                stats["kills_short"] = kills_wanted - stats["killed"]
                kills_wanted = stats["killed"]
    return dict(stats)


def audit(engine: Any, ledger: Path, n_subs: int, n_dates: int) -> dict[str, Any]:
    gw = FakeGateway(ledger_path=str(ledger))
    entries = gw.ledger
    charges = [e for e in entries if e.kind == "charge"]
    with Session(engine) as s:
        invoices = list(s.exec(select(Invoice)))
        attempts = list(s.exec(select(PaymentAttempt)))
        claimed = int(s.exec(select(func.count()).select_from(Subscription).where(
            col(Subscription.lease_owner).is_not(None))).one())
        subs = int(s.exec(select(func.count()).select_from(Subscription)).one())
        refunds_rows = int(s.exec(select(func.count()).select_from(Refund)).one())
    paid = [i for i in invoices if i.status == InvoiceStatus.PAID]
    per_invoice = Counter(e.metadata.get("invoice_id") for e in charges)
    per_period = Counter((i.subscription_id, i.period_index) for i in paid)
    per_sub = Counter(i.subscription_id for i in paid)
    paid_ids = {i.id for i in paid}
    by_key = {a.idempotency_key: a for a in attempts}
    currencies = sorted({e.currency for e in entries} | {i.currency for i in invoices} | {CURRENCY})
    money = {
        cur: {
            "ledger_charged": gw.total_collected(cur), "ledger_refunded": gw.total_refunded(cur),
            "paid_invoices": sum(i.amount_paid_minor for i in paid if i.currency == cur),
            "expected": n_subs * n_dates * PRICE if cur == CURRENCY else 0,
        }
        for cur in currencies
    }
    return {
        "subscriptions": subs,
        "ledger_charges": len(charges),
        "paid_invoices": len(paid),
        "attempts": len(attempts),
        "doubles": sum(v - 1 for v in per_invoice.values() if v > 1) + sum(v - 1 for v in per_period.values() if v > 1),
        "missed": n_subs * n_dates - sum(min(v, n_dates) for v in per_sub.values()),
        "extra_periods": sum(max(v - n_dates, 0) for v in per_sub.values()),
        "charges_without_paid_invoice": len(set(per_invoice) - paid_ids),
        "paid_without_charge": len(paid_ids - set(per_invoice)),
        "charge_id_mismatches": sum(1 for e in charges
                                    if e.idempotency_key not in by_key or by_key[e.idempotency_key].gateway_charge_id != e.id),
        "declined_attempts": sum(1 for a in attempts if a.status in ("failed", "requires_action")),
        "unresolved": sum(1 for a in attempts if a.status in ("pending", "unknown")),
        "stale_claims": claimed,
        "refunds": refunds_rows + sum(1 for e in entries if e.kind == "refund"),
        "money": money,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite:///bench-chaos.db", help="SQLAlchemy URL (reset first)")
    ap.add_argument("--subscriptions", type=int, default=2000)
    ap.add_argument("--dates", type=int, default=3, help="renewal dates (monthly from 2026-03-01)")
    ap.add_argument("--kills", type=int, default=120, help="SIGKILLs in all (spread over the dates)")
    ap.add_argument("--workers", type=int, default=3, help="run-cycle processes alive at once")
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--lease", type=float, default=1.0, help="BILLING_CLAIM_LEASE_SECONDS")
    ap.add_argument("--batch", type=int, default=50, help="BILLING_CYCLE_BATCH_SIZE")
    ap.add_argument("--concurrency", type=int, default=8, help="BILLING_GATEWAY_CONCURRENCY")
    ap.add_argument("--min-life", type=float, default=0.3, help="blind kills: shortest lifetime (s)")
    ap.add_argument("--max-life", type=float, default=3.0, help="blind kills: longest lifetime (s)")
    ap.add_argument("--armed-share", type=float, default=0.7,
                    help="share of processes killed while holding claims (the rest: blind lifetimes)")
    ap.add_argument("--armed-max", type=float, default=0.4,
                    help="armed kills: at most this long (s) after the process was first seen holding claims")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--ledger", help="fake gateway ledger file (default: a temporary file)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    backend = make_url(args.database).get_backend_name()

    reset_database(args.database)
    t0 = time.perf_counter()
    seed(args.database, args.subscriptions)
    seeded_s = time.perf_counter() - t0
    print(f"seeded {args.subscriptions} subscriptions on {backend} in {seeded_s:.1f}s")

    tmp = tempfile.TemporaryDirectory(prefix="chaos-")
    ledger = Path(args.ledger) if args.ledger else Path(tmp.name) / "gateway-ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    env = worker_env(args, ledger)
    engine = make_engine(args.database)
    dates = renewal_dates(args.dates)
    per_date = [args.kills // len(dates) + (1 if k < args.kills % len(dates) else 0) for k in range(len(dates))]
    totals = Counter[str]()
    finals: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for k, (at, wanted) in enumerate(zip(dates, per_date, strict=True)):
        t_date = time.perf_counter()
        if k > 0:  # the renewal's reminder, a week ahead: a renewal waits for it (reminder rule)
            ahead = iso(at - timedelta(days=7))
            reminded = subprocess.run(run_cycle_cmd(ahead), env=env, cwd=ROOT, capture_output=True, text=True,
                                      timeout=900)
            if reminded.returncode != 0:
                sys.exit(f"the reminder run at {ahead} failed (exit {reminded.returncode}): "
                         f"{reminded.stderr.strip()[-2000:]}")
        stats = chaos_at(args, env, at, wanted, rng, engine)
        totals.update(stats)
        time.sleep(args.lease + 0.5)  # the killed workers' claims lapse
        final = subprocess.run(run_cycle_cmd(iso(at)), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        summary = json.loads(final.stdout) if final.stdout.strip().startswith("{") else {}
        finals.append({"at": iso(at), "exit": final.returncode, "due": summary.get("due"),
                       "succeeded": summary.get("succeeded"), "reconciled": summary.get("reconciled"),
                       "unresolved": summary.get("unresolved")})
        short = f", {stats['kills_short']} short: nothing left to kill" if stats.get("kills_short") else ""
        print(f"{iso(at)}: {stats.get('started', 0)} processes, {stats.get('killed', 0)} SIGKILLed{short} "
              f"({stats.get('killed_armed', 0)} armed, {stats.get('killed_blind', 0)} blind; "
              f"{stats.get('killed_with_work_due', 0)} with work still due, {stats.get('killed_holding_claims', 0)} "
              f"holding claims, {stats.get('attempts_in_flight_at_kills', 0)} attempts in flight), "
              f"final run exit {final.returncode}: due {summary.get('due')} succeeded {summary.get('succeeded')} "
              f"reconciled {summary.get('reconciled')} ({time.perf_counter() - t_date:.0f}s)")
        if final.returncode != 0:
            print(final.stderr.strip()[-2000:], file=sys.stderr)
    chaos_s = time.perf_counter() - t0

    result = audit(engine, ledger, args.subscriptions, len(dates))
    engine.dispose()
    money_ok = all(m["ledger_charged"] == m["paid_invoices"] == m["expected"] and m["ledger_refunded"] == 0
                   for m in result["money"].values())
    problems = {k: result[k] for k in ("doubles", "missed", "extra_periods", "charges_without_paid_invoice",
                                       "paid_without_charge", "charge_id_mismatches", "declined_attempts",
                                       "unresolved", "stale_claims", "refunds") if result[k]}
    if result["subscriptions"] != args.subscriptions:
        problems["subscriptions"] = result["subscriptions"]
    if not money_ok:
        problems["money"] = result["money"]
    bad_finals = [f for f in finals if f["exit"] != 0]
    if bad_finals:
        problems["final_runs"] = bad_finals
    ok = not problems

    print(f"backend={backend} subscriptions={args.subscriptions} dates={len(dates)} workers={args.workers} "
          f"latency={args.latency_ms}ms lease={args.lease}s batch={args.batch} concurrency={args.concurrency}")
    print(f"processes started {totals['started']}, SIGKILLed {totals['killed']} "
          f"({totals['killed_with_work_due']} while work was due, {totals['killed_holding_claims']} holding claims "
          f"with {totals['attempts_in_flight_at_kills']} attempts committed but not settled), exited on their own "
          f"{sum(v for k, v in totals.items() if k.startswith('exit_'))} "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(totals.items()) if k.startswith('exit_')) or '-'}); "
          f"chaos {chaos_s:.0f}s")
    print(f"ledger charges checked {result['ledger_charges']}, paid invoices {result['paid_invoices']}, "
          f"attempts {result['attempts']}")
    print(f"doubles {result['doubles']}, missed {result['missed']}, extra periods {result['extra_periods']}, "
          f"charges without paid invoice {result['charges_without_paid_invoice']}, paid without charge "
          f"{result['paid_without_charge']}, charge-id mismatches {result['charge_id_mismatches']}, declined "
          f"{result['declined_attempts']}, unresolved {result['unresolved']}, stale claims {result['stale_claims']}")
    for cur, m in result["money"].items():
        print(f"money {cur}: ledger {m['ledger_charged']} (refunded {m['ledger_refunded']}), paid invoices "
              f"{m['paid_invoices']}, expected {m['expected']}")
    if totals["killed_holding_claims"] == 0:
        print("WARNING: no kill landed while a process held claims -- this run tested start-up kills only")
    print("OK: every period charged exactly once" if ok else f"FAILED: {json.dumps(problems, default=str)}")
    print(json.dumps({
        "bench": "chaos", "ok": ok, "backend": backend, "subscriptions": args.subscriptions, "dates": len(dates),
        "workers": args.workers, "latency_ms": args.latency_ms, "lease_s": args.lease, "batch": args.batch,
        "concurrency": args.concurrency, "seed": args.seed, "processes": totals["started"],
        "kills": totals["killed"], "kills_with_work_due": totals["killed_with_work_due"],
        "kills_holding_claims": totals["killed_holding_claims"], "kills_armed": totals["killed_armed"],
        "kills_blind": totals["killed_blind"], "kills_short": totals["kills_short"],
        "attempts_in_flight_at_kills": totals["attempts_in_flight_at_kills"],
        "seed_s": round(seeded_s, 1), "chaos_s": round(chaos_s, 1), "final_runs": finals,
        **{k: v for k, v in result.items()}, "problems": problems,
    }, default=str))
    tmp.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
