"""Import benchmark: N subscriptions from a CSV (``billing import csv``), timed end to end
(parse + validate every row, then the set-based writes in one transaction), then the
same file again (idempotent: creates nothing).

    python bench/import_bench.py --database sqlite:///bench-import.db --subscriptions 100000
    python bench/import_bench.py --database postgresql+psycopg://postgres@127.0.0.1/bench_import
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cycle_data import reset  # noqa: E402
from billing_engine.db import make_engine, upgrade  # noqa: E402
from billing_engine.imports import service  # noqa: E402
from billing_engine.periods import Interval, boundary  # noqa: E402

NOW = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
HEADER = ("subscription_id,customer_id,email,name,payment_token,card_brand,card_last4,card_exp_month,card_exp_year,"
          "plan_code,amount,currency,interval,status,billing_anchor,current_period_start,current_period_end,"
          "trial_end,cancel_at_period_end,created_at")


def iso(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


def make_csv(n: int) -> str:
    lines = [HEADER]
    for g in range(n):
        start = NOW - timedelta(days=400) + timedelta(seconds=g * 37 % (86400 * 28))
        k = g % 20
        if k < 12:  # monthly, 13 periods in
            plan, amount, cur, iv = "bench-usd-monthly", "17.00", "USD", "month"
            anchor = start
            cps, cpe = boundary(anchor, Interval.MONTH, 1, 13), boundary(anchor, Interval.MONTH, 1, 14)
        elif k < 15:  # yearly
            plan, amount, cur, iv = "bench-eur-yearly", "99.00", "EUR", "year"
            anchor = start
            cps, cpe = start.replace(year=start.year + 1), start.replace(year=start.year + 2)
        else:  # weekly
            plan, amount, cur, iv = "bench-usd-weekly", "5.00", "USD", "week"
            anchor = start
            cps = start + timedelta(weeks=57)
            cpe = cps + timedelta(weeks=1)
        status = "trialing" if g % 50 == 0 and iv != "year" else "active"
        trial = ""
        if status == "trialing":
            anchor = cpe
            trial = iso(cpe)
        lines.append(f"s{g},c{g},c{g}@bench.example,Customer {g},pm_card_visa,visa,4242,12,2034,{plan},{amount},{cur},"
                     f"{iv},{status},{iso(anchor)},{iso(cps)},{iso(cpe)},{trial},{'true' if g % 40 == 1 else 'false'},"
                     f"{iso(start)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", default="sqlite:///bench-import.db")
    ap.add_argument("--subscriptions", type=int, default=100_000)
    args = ap.parse_args()
    t = time.perf_counter()
    text = make_csv(args.subscriptions)
    print(f"generated a CSV of {args.subscriptions:,} rows ({len(text) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
    reset(args.database)
    engine = make_engine(args.database)
    upgrade(engine)
    t, cpu = time.perf_counter(), time.process_time()
    report = service.import_csv(engine, text, now=NOW, default_gateway="fake")
    took, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"imported {report.result.created['subscriptions']:,} subscriptions "
          f"({report.result.created}) in {took:.1f}s = {report.result.created['subscriptions'] / took:,.0f}/s; "
          f"CPU time of this process {cpu:.1f}s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t = time.perf_counter()
    again = service.import_csv(engine, text, now=NOW, default_gateway="fake")
    print(f"second run: created {sum(again.result.created.values())} objects, "
          f"{again.result.already_imported:,} already imported, in {time.perf_counter() - t:.1f}s")
    engine.dispose()


if __name__ == "__main__":
    main()
