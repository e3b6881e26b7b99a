"""Several `billing run-cycle` processes at once share the work: every period charged once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, func, select

from billing_engine import subscriptions
from billing_engine.db import make_engine, transaction
from billing_engine.models import Invoice, PaymentAttempt
from tests.factories import make_card, make_customer, make_plan

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def test_three_processes_charge_each_subscription_exactly_once(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    with transaction(engine) as s:
        plan = make_plan(s, AT)
        for i in range(60):
            cust = make_customer(s, AT, email=f"p{i}@example.com")
            pm = make_card(s, AT, cust, plan)
            subscriptions.create(s, customer_id=cust.id, plan_id=plan.id, payment_method_id=pm.id, now=AT)
    env = {**os.environ, "BILLING_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT), "BILLING_MAIL_TRANSPORT": "none"}
    procs = [subprocess.Popen([sys.executable, "-m", "cli.main", "run-cycle", "--at", AT.isoformat(), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    summaries = [json.loads(o[0]) for o in outs]
    assert sum(x["succeeded"] for x in summaries) == 60
    assert all(x["errors"] == [] for x in summaries)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Invoice)).one() == 60
        assert s.exec(select(func.count()).select_from(PaymentAttempt)).one() == 60
    engine.dispose()
