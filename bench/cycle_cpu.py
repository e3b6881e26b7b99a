"""CPU per renewal of one in-process run-cycle: less sensitive to a shared machine's load
than renewals/s (bench/README.md, "Third round").

    python bench/cycle_cpu.py --database postgresql+psycopg://postgres@127.0.0.1:5432/bench_cpu
    python bench/cycle_cpu.py --database sqlite:////tmp/bench-cpu.db
    python bench/cycle_cpu.py ... --phases        # thread CPU of the pipeline's main functions
    python bench/cycle_cpu.py ... --statements    # statements per batch, wall time of each

Loads N due subscriptions (bench/cycle_data.py), runs ``run_cycle`` in this process with
the fake gateway and its durable SQLite ledger (as pipeline_bench.py does), then prints
the worker's CPU (user + system) per renewal, the CPU the PostgreSQL backends of this
database used meanwhile (read from /proc: server on the same machine), and the load
average. ``--concurrency`` is BILLING_GATEWAY_CONCURRENCY (pipeline_bench's default: 64).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.cycle_data import NOW, generate  # noqa: E402
from billing_engine.db import make_engine  # noqa: E402

CPU: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()


def _wrap(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            CPU[label] += time.thread_time() - t
            CALLS[label] += 1

    setattr(owner, name, timed)


def install_phases() -> None:
    """Thread CPU (inclusive) of the pipeline's main steps, by wrapping them."""
    from billing_engine import charging, claims, events, notifications, payments, renewals
    from billing_engine.gateway.fake import FakeGateway

    for mod, names in ((claims, ("claim_rows_in",)), (renewals, ("load", "decide")),
                       (charging, ("prepare", "_start_attempts_bulk", "settle", "_bulk_update", "bulk_insert",
                                   "_insert_ignoring_duplicates", "_load_subs")),
                       (payments, ("paid_changes",)), (events, ("row",)), (notifications, ("row",))):
        for n in names:
            _wrap(mod, n, f"{mod.__name__.rsplit('.', 1)[-1]}.{n}")
    _wrap(FakeGateway, "charge", "FakeGateway.charge")


def backend_cpu(engine: Engine) -> dict[int, float]:
    """CPU seconds so far of this database's PostgreSQL backends (pid -> seconds)."""
    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as c:
        pids = [r[0] for r in c.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"))]
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_mb() -> float:
    """The resident set now (not the peak), from /proc."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/bench_cpu")
    ap.add_argument("--subscriptions", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=None, help="BILLING_CYCLE_BATCH_SIZE (default: the setting's own)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--phases", action="store_true")
    ap.add_argument("--statements", action="store_true")
    ap.add_argument("--rss", action="store_true", help="print the RSS every tenth of the run (memory growth)")
    ap.add_argument("--no-ledger", action="store_true", help="the fake gateway in memory (no SQLite ledger)")
    ap.add_argument("--reuse", action="store_true", help="do not reload the data (it must be due still)")
    args = ap.parse_args()
    if args.batch is None:
        from billing_engine.settings import Settings

        args.batch = Settings.model_fields["cycle_batch_size"].default
    os.environ["BILLING_ENV"] = "test"
    if not args.reuse:
        print(f"loaded {args.subscriptions:,} due subscriptions in {generate(args.database, args.subscriptions):.1f}s",
              flush=True)
    if args.phases:
        install_phases()
    from billing_engine.cycle import run_cycle
    from billing_engine.gateway.fake import FakeGateway
    from billing_engine.settings import load_settings

    engine = make_engine(args.database)
    counts: collections.Counter[str] = collections.Counter()
    walls: collections.Counter[str] = collections.Counter()
    if args.statements:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, _cur: Any, _stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
            conn.info["t0"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, _cur: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
            key = " ".join(stmt.split())[:100]
            counts[key] += 1
            walls[key] += time.perf_counter() - conn.info["t0"]

    ledger = f"/tmp/bench-cpu-ledger-{os.getpid()}.db"
    gw = FakeGateway(ledger_path=None if args.no_ledger else ledger)
    settings = load_settings(database_url=args.database, gateway="fake", cycle_batch_size=args.batch,
                             gateway_concurrency=args.concurrency)
    pg0, load0 = backend_cpu(engine), os.getloadavg()[0]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    marks = [0]

    def progress(done: int, total: int) -> None:
        if args.rss and total and done >= marks[0]:
            print(f"  rss {rss_mb():7.1f} MB at {done:,} renewals ({time.perf_counter() - t0:.1f}s)", flush=True)
            marks[0] = done + max(total // 10, 1)

    summary = run_cycle(engine, gw, now=NOW, settings=settings, on_progress=progress)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    pg = sum(v - pg0.get(pid, 0.0) for pid, v in backend_cpu(engine).items())
    n = max(summary.succeeded, 1)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"{engine.dialect.name}: {summary.succeeded:,} renewals in {wall:.2f}s = {summary.succeeded / wall:,.0f}/s; "
          f"worker CPU {1000 * cpu / n:.3f} ms/renewal (user {1000 * (r1.ru_utime - r0.ru_utime) / n:.3f}); "
          f"PostgreSQL backends {1000 * pg / n:.3f} ms/renewal; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"thread switches {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.2f} voluntary + {(r1.ru_nivcsw - r0.ru_nivcsw) / n:.2f} "
          "forced per renewal")
    if args.rss:
        print(f"  rss {rss_mb():7.1f} MB at the end; peak {r1.ru_maxrss / 1024:.1f} MB")
    for label, secs in CPU.most_common():
        print(f"  {label:36s} {CALLS[label]:7d} calls  {1000 * secs / n:.4f} ms/renewal (thread CPU, inclusive)")
    if counts:
        print(f"  {sum(counts.values())} statements = {sum(counts.values()) / n:.4f} per renewal")
        for key, secs in walls.most_common(25):
            print(f"  {counts[key]:6d} {secs:7.3f}s  {key}")
    for suffix in ("", "-wal", "-shm"):
        Path(ledger + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
