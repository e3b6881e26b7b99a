"""Run-cycle pipeline benchmark: renewals/s, peak RSS, engine-caused 429s, exactly-once.

    python bench/pipeline_bench.py --database postgresql+psycopg://postgres@127.0.0.1:5432/bench_pipeline \\
        --subscriptions 100000 --workers 2
    python bench/pipeline_bench.py --database sqlite:///bench-pipeline.db --subscriptions 10000
    python bench/pipeline_bench.py ... --latency-ms 300 --rate 100      # gateway-bound, shared limit
    python bench/pipeline_bench.py ... --profile profile.txt           # pyinstrument, worker 0

Loads N due subscriptions (bench/cycle_data.py; --reuse skips it), starts W worker
processes that each run `run_cycle` at the same instant with the fake gateway (its
ledger in a SQLite file shared by the workers, so the check sees every charge), then
prints a text report and one JSON line. Exits 1 on any exactly-once difference:
every subscription has exactly one paid invoice for the period, attempts = distinct
idempotency keys = ledger charges = N, every ledger charge matches one paid invoice.
With --rate, the workers share one token bucket through the database and the report
counts the calls that exceeded the limit in any 1-second window (what a real
gateway would have answered 429).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from bench.cycle_data import NOW, generate  # noqa: E402
from billing_engine.db import make_engine  # noqa: E402


def worker(url: str, ledger: str, latency: float, rate: float | None, batch: int, concurrency: int,
           profile: str | None, out: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ["BILLING_ENV"] = "test"
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.gateway.rate_limit import SharedTokenBucket
    from billing_engine.settings import load_settings

    engine = make_engine(url)
    # the gateway's limit (the account's, shared by every worker): the engine paces just under it
    limiter = SharedTokenBucket(engine, "gateway:fake", limit=rate) if rate else None
    gw = FakeGateway(latency=latency, ledger_path=ledger, rate_limiter=limiter)
    settings = load_settings(database_url=url, gateway="fake", cycle_batch_size=batch, gateway_concurrency=concurrency)
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    t = time.perf_counter()
    summary = run_cycle(engine, gw, now=NOW, settings=settings)
    wall = time.perf_counter() - t
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))  # type: ignore[arg-type]
    rss_mb = peak_rss_mb()
    # plain JSON values: the queue pickles in a background thread, and an object it cannot
    # pickle is dropped with only a line on stderr (the parent would wait for it forever)
    out.put(json.loads(json.dumps({"succeeded": summary.succeeded, "errors": len(summary.errors), "wall": wall,
                                   "rss_mb": rss_mb, "stopped": summary.stopped, "timings": summary.timings},
                                  default=str)))
    engine.dispose()


def collect(procs: list[Any], q: Any) -> list[dict[str, Any]]:
    """One result per worker; exits 1 naming the worker(s) that ended without one (an
    exception: its traceback is on stderr above) instead of waiting for it forever."""
    import queue

    results: list[dict[str, Any]] = []
    while len(results) < len(procs):
        try:
            results.append(q.get(timeout=1.0))
        except queue.Empty:
            if all(not p.is_alive() for p in procs):
                try:  # the last results may still be in the pipe
                    while len(results) < len(procs):
                        results.append(q.get(timeout=2.0))
                except queue.Empty:
                    dead = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs)]
                    print(f"FAILED: {len(procs) - len(results)} of {len(procs)} workers ended without a result: "
                          + ", ".join(dead), file=sys.stderr)
                    sys.exit(1)
    return results


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM (Linux). Not ``ru_maxrss``: a spawned worker is
    forked from this script and exec'd, and ``ru_maxrss`` survives the exec -- on SQLite it
    showed the parent's RSS after loading the data (148 MB at 60k) instead of the worker's
    (107 MB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(url: str, ledger: str, n: int) -> dict[str, int | bool]:
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.models import Invoice, PaymentAttempt, Subscription

    engine = make_engine(url)
    with Session(engine) as s:
        paid = s.exec(select(func.count()).select_from(Invoice).where(Invoice.status == "paid")).one()
        subs_paid = s.exec(select(func.count(func.distinct(Invoice.subscription_id))).where(
            Invoice.status == "paid")).one()
        attempts = s.exec(select(func.count()).select_from(PaymentAttempt)).one()
        keys = s.exec(select(func.count(func.distinct(PaymentAttempt.idempotency_key)))).one()
        unresolved = s.exec(select(func.count()).select_from(PaymentAttempt).where(
            PaymentAttempt.status.in_(["pending", "unknown"]))).one()  # type: ignore[attr-defined]
        claimed = s.exec(select(func.count()).select_from(Subscription).where(
            Subscription.lease_owner.is_not(None))).one()  # type: ignore[union-attr]
        paid_ids = set(s.exec(select(Invoice.id).where(Invoice.status == "paid")))
    engine.dispose()
    charges = [e for e in FakeGateway(ledger_path=ledger).ledger if e.kind == "charge"]
    per_invoice = Counter(e.metadata["invoice_id"] for e in charges)
    ok = (paid == subs_paid == attempts == keys == len(charges) == n and unresolved == 0 and claimed == 0
          and set(per_invoice) == paid_ids and max(per_invoice.values(), default=1) == 1)
    return {"paid_invoices": paid, "attempts": attempts, "distinct_keys": keys, "ledger_charges": len(charges),
            "double_charged": sum(1 for v in per_invoice.values() if v > 1), "unresolved": unresolved,
            "claims_left": claimed, "ok": ok}


def over_limit(ledger: str, rate: float) -> int:
    """Calls beyond ``rate`` in any trailing 1 s window: what a real gateway answers with 429."""
    from billing_engine.gateway.fake import FakeGateway

    times = sorted(FakeGateway(ledger_path=ledger).ledger_times())
    excess, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        if hi - lo + 1 > rate:
            excess += 1
    return excess


def sustained_rate(ledger: str) -> float:
    """Calls/s between the first and the last call the gateway saw (the run's start-up
    and the last answer's latency left out)."""
    from billing_engine.gateway.fake import FakeGateway

    times = sorted(FakeGateway(ledger_path=ledger).ledger_times())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite:///bench-pipeline.db")
    ap.add_argument("--subscriptions", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=None, help="shared gateway limit, calls/s (all workers)")
    ap.add_argument("--batch", type=int, default=None, help="BILLING_CYCLE_BATCH_SIZE (default: the setting's own)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", default=None, help="write worker 0's pyinstrument profile here")
    args = ap.parse_args()
    if args.batch is None:
        from billing_engine.settings import Settings

        args.batch = Settings.model_fields["cycle_batch_size"].default

    print(f"loaded {args.subscriptions:,} due subscriptions in {generate(args.database, args.subscriptions):.1f}s",
          flush=True)
    ledger = str(Path(f"/tmp/bench-ledger-{os.getpid()}.db"))
    for suffix in ("", "-wal", "-shm"):
        Path(ledger + suffix).unlink(missing_ok=True)

    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(
        target=worker, args=(args.database, ledger, args.latency_ms / 1000, args.rate, args.batch, args.concurrency,
                             args.profile if i == 0 else None, q)) for i in range(args.workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = collect(procs, q)
    for p in procs:
        p.join()
    wall = max(r["wall"] for r in results)
    total = sum(r["succeeded"] for r in results)
    audit = check(args.database, ledger, args.subscriptions)
    excess = over_limit(ledger, args.rate) if args.rate else 0
    sustained = sustained_rate(ledger) if args.rate or args.latency_ms else None
    backend = make_url(args.database).get_backend_name()
    report = {
        "backend": backend, "subscriptions": args.subscriptions, "workers": args.workers,
        "latency_ms": args.latency_ms, "rate_limit": args.rate, "batch": args.batch, "concurrency": args.concurrency,
        "renewals": total, "wall_s": round(wall, 2), "renewals_per_s": round(total / wall, 1),
        "peak_rss_mb": [round(r["rss_mb"], 1) for r in results], "calls_over_limit": excess,
        "sustained_calls_per_s": round(sustained, 1) if sustained is not None else None,
        "errors": sum(r["errors"] for r in results), "stopped": [r["stopped"] for r in results],
        "process_wall_s": round(time.perf_counter() - t0, 2), **audit,
    }
    print(f"{backend}: {total:,} renewals by {args.workers} worker(s) in {wall:.2f}s = {total / wall:,.0f}/s; "
          f"peak RSS {report['peak_rss_mb']} MB; latency {args.latency_ms} ms; calls over the limit {excess}; "
          + (f"sustained {sustained:.1f} calls/s; " if sustained is not None else "") +
          f"exactly-once {'OK' if audit['ok'] else 'FAILED'} ({audit})")
    print(json.dumps(report))
    sys.exit(0 if audit["ok"] else 1)


if __name__ == "__main__":
    main()
