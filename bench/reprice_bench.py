"""Time ``pricing.reprice`` (the notice e-mails, events and consents of every subscriber) on
a fresh SQLite file: N active subscribers of one plan, a third of them Hungarian, three
reprices, each rolled back. Run from a worktree's root so its code is the one timed:

    PYTHONPATH=. timeout 400 .venv/bin/python bench/reprice_bench.py 3000
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

import billing_engine
from billing_engine import customers, db, pricing
from billing_engine.db import transaction
from billing_engine.models import Customer
from tests.factories import make_plan, make_subscription


def main(n: int) -> None:
    eng = db.make_engine(f"sqlite:///{tempfile.mkdtemp()}/reprice.db")
    db.upgrade(eng)
    now = datetime(2026, 1, 15, 10, tzinfo=UTC)
    with transaction(eng) as s:
        plan = make_plan(s, now)
        for i in range(n):
            sub = make_subscription(s, now, plan=plan, email=f"c{i}@example.com")
            sub.status = "active"
            if i % 3 == 1:
                customers.set_locale(s, s.get_one(Customer, sub.customer_id), "hu", now=now)
    kw = {"default_locale": "en"} if "default_locale" in inspect.signature(pricing.reprice).parameters else {}
    times = []
    for k in range(3):
        with Session(eng) as s:
            t = time.perf_counter()
            pricing.reprice(s, "basic-monthly", amount_minor=2900 + k, notice_days=30,
                            now=now + timedelta(days=1 + k), **kw)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t)
            s.rollback()
    print(billing_engine.__file__, n, "reprice s:", [round(x, 3) for x in times])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
